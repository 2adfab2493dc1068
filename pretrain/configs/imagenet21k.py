r"""The JFT recipe on ImageNet-21k, the public stand-in for JFT-300M.

    python -m pretrain.main --config pretrain/configs/imagenet21k.py:variant=F4+ \
        --workdir /ckpt/nfnet_f4plus_in21k \
        --config.data.train='arrayrecord:/data/imagenet21k/train-*.array_record' \
        --config.data.eval='arrayrecord:/data/imagenet21k/eval-*.array_record'

Same optimizer and schedule as pretrain/configs/jft.py (224 px, batch 4096,
SGD-Nesterov + AGC 0.01, lr 1.6 with 5 warm-up epochs then cosine, weight
decay 1e-6, crop and flip only, no EMA) on the 13.15M images of 21,843
classes of the winter21 release.
ImageNet-21k (fall11 / winter21) gives one label per image, so the loss is
softmax cross-entropy. With 20x fewer images than JFT, the default runs 90
epochs for F4+ (about 289k steps; set --config.total_epochs to change it).
Data: convert the class folders once with
`python -m data.convert folder:/data/imagenet21k/train --out /data/imagenet21k`
(and a held-out folder with `--split eval`), or point `data.train` at
`tfds:NAME/train` for a TFDS-prepared copy.

Expected: a pre-trained model whose ImageNet fine-tune beats training from
scratch; the paper has no ImageNet-21k numbers for NFNets.
"""
from nfnet.train import config_base
from pretrain.configs import jft

IMAGENET21K_TRAIN_EXAMPLES = 13_151_276  # winter21 release, 21,843 classes


def get_config(arg=None):
  arg = config_base.parse_arg(arg, variant="F4+", runlocal=False,
                              loss="softmax", epochs=90.0)
  config = jft.get_config(f"variant={arg.variant},runlocal={arg.runlocal},"
                          f"loss={arg.loss}")
  config.data.train = "arrayrecord:/data/imagenet21k/train-*.array_record"
  config.data.eval = "arrayrecord:/data/imagenet21k/eval-*.array_record"
  config.data.train_examples = IMAGENET21K_TRAIN_EXAMPLES
  if not arg.runlocal:
    config.total_epochs = arg.epochs
  return config
