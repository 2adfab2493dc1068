r"""The paper's ImageNet fine-tune of a pre-trained NFNet (appendix A.5).

    python -m finetune.main --config finetune/configs/imagenet.py:variant=F4+,res=384 \
        --workdir /ckpt/f4plus_ft384 --config.init_from=/ckpt/f4plus_jft

All layers are fine-tuned on ImageNet (TFDS `imagenet2012`, prepared in the
array_record format) at `res` (224, 320 or 384 in the paper; any size works)
and evaluated on the validation split at the same resolution: batch 2048,
15,000 steps, lr 0.1 without batch scaling, warmed up from 0 over 5,000 steps
then cosine to 0, SGD-Nesterov 0.9 + AGC 0.01 (`nfnet.optim.sgd_agc`), SAM
with rho 0.05 on 20% of each replica's batch with per-replica ascent, weight
decay 1e-5, dropout 0.25, stochastic depth 0.1, EMA 0.9999 with warm-up.
Crop and flip only. NF-ResNets use the paper's ResNet setting (appendix
A.5): no SAM, weight decay, dropout or stochastic depth.

Expected (paper, Table 5 / Table 4): NFNet-F4+ from JFT-300M reaches 89.2%
top-1; NF-ResNet-50 79.5 / 80.9 / 81.1 at 224 / 320 / 384.
"""
from nfnet.train import config_base

IMAGENET_TRAIN_EXAMPLES = 1_281_167


def get_config(arg=None):
  arg = config_base.parse_arg(arg, variant="F4+", res=384, runlocal=False)
  config = config_base.base_config()
  config.model.variant = arg.variant
  is_resnet = arg.variant.lower().startswith("nf-resnet")
  config.model.remat = True
  config.model.drop_rate = 0.0 if is_resnet else 0.25
  config.model.stochdepth_rate = 0.0 if is_resnet else 0.1

  config.data.train = "tfds:imagenet2012/train"
  config.data.eval = "tfds:imagenet2012/validation"
  config.data.train_examples = IMAGENET_TRAIN_EXAMPLES
  config.loss = "softmax"

  config.resolution = arg.res
  config.batch_size = 2048
  config.total_steps = 15_000
  config.warmup_steps = 5_000
  config_base.finetune_recipe(config, weight_decay=0.0 if is_resnet else 1e-5,
                              sam_rho=0.0 if is_resnet else 0.05)

  config_base.cadence(config, log=100, eval=2_500,
                      checkpoint=1_000, keep=2)

  if arg.runlocal:
    config_base.runlocal(config, variant="F0")
  return config
