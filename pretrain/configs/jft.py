r"""The paper's large-scale pre-training (appendix A.5) on JFT-style shards.

    python -m pretrain.main --config pretrain/configs/jft.py:variant=F4+ \
        --workdir gs://bucket/nfnet_f4plus_jft \
        --config.data.train='arrayrecord:/data/jft/train-*.array_record' \
        --config.data.eval='arrayrecord:/data/jft/eval-*.array_record'

NFNet-F4+ (or F4, or any variant by arg), 224 px whatever the variant, batch
4096, SGD with Nesterov momentum 0.9 + AGC 0.01 (`nfnet.optim.sgd_agc`), peak
learning rate 0.1 * 4096 / 256 = 1.6 warmed up over 5 epochs (the ImageNet
settings, as the paper says) then cosine to 0, weight decay 1e-6 for NFNets
(1e-5 for NF-ResNets: batch 1024, lr 0.4, 5,000 warm-up steps, 10 epochs),
crop and flip only, no EMA. 20 epochs for F4+, 40 for F4. The paper lists
no regularisation for pre-training either, so dropout and stochastic depth
are off.

Loss: JFT is multi-label (about 18k classes, several labels per image), so the
default is sigmoid cross-entropy over multi-hot targets: every label is its
own binary decision and an image with three labels is not told that each is
only a third right, which a softmax over a normalised label vector would do.
Pass loss=softmax for a single-label corpus.

Expected: the paper's F4+ reaches 89.2% ImageNet top-1 after fine-tuning
(finetune/configs/imagenet.py); pre-training itself reports precision@1 on
the held-out split. `runlocal=True` shrinks everything to run on a laptop.
"""
from nfnet.train import config_base

JFT_TRAIN_EXAMPLES = 300_000_000  # "JFT-300M": nominal size for dry runs.


def get_config(arg=None):
  arg = config_base.parse_arg(arg, variant="F4+", runlocal=False,
                              loss="sigmoid")
  config = config_base.base_config()
  config.model.variant = arg.variant
  is_resnet = arg.variant.lower().startswith("nf-resnet")
  config.model.remat = True           # F4+ at 32 images per device needs it
  config.model.stochdepth_rate = 0.0  # no regularisation in pre-training
  config.model.drop_rate = 0.0

  config.data.train = "arrayrecord:/data/jft/train-*.array_record"
  config.data.eval = "arrayrecord:/data/jft/eval-*.array_record"
  config.data.train_examples = JFT_TRAIN_EXAMPLES
  config.loss = arg.loss

  config.resolution = 224
  config.batch_size = 1024 if is_resnet else 4096
  config.lr = 0.4 if is_resnet else 0.1
  config.lr_batch_scaling = not is_resnet  # ResNets: lr 0.4 as given
  config.weight_decay = 1e-5 if is_resnet else 1e-6
  config.agc_clipping = 0.01
  if is_resnet:
    config.total_epochs = 10.0
    config.warmup_steps = 5000
  else:
    config.total_epochs = 20.0 if arg.variant.endswith("+") else 40.0
    config.warmup_epochs = 5.0
  config.ema_decay = 0.0

  config_base.cadence(config, log=100, eval=10_000,
                      checkpoint=5_000, keep=3, keep_every=100_000)

  if arg.runlocal:
    config_base.runlocal(config, variant="F0")
  return config
