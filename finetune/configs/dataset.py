r"""Fine-tune on any labelled image set: a TFDS dataset, an image folder or shards.

    python -m finetune.main --config finetune/configs/dataset.py:variant=F0,res=256 \
        --workdir /ckpt/f0_flowers \
        --config.init_from=/weights/F0_haiku.npz \
        --config.data.train=folder:/data/flowers/train \
        --config.data.eval=folder:/data/flowers/val

The number of classes comes from the training source (class folders, the
TFDS label feature, or the shards' dataset_info.json), and the head is
re-initialised to it. The recipe is the paper's fine-tune scaled to a small
dataset: SGD-Nesterov + AGC 0.01, lr 0.1 (batch 512 by default), 10% warm-up
then cosine, SAM rho 0.05 (ascent on 20% of each replica's examples), weight
decay 1e-5, dropout 0.25, stochastic depth 0.1, EMA 0.9999; raw and EMA
weights are evaluated at the training resolution. Set `steps` for the length.

Expected: well above training from scratch on the same data; the demo
(recipes/demo.sh) measures that gap on the synthetic downstream set.
"""
from nfnet.train import config_base


def get_config(arg=None):
  arg = config_base.parse_arg(arg, variant="F0", res=256, steps=5000,
                              batch=512)
  config = config_base.base_config()
  config.model.variant = arg.variant
  config.model.drop_rate = 0.25
  config.model.stochdepth_rate = 0.1
  config.loss = "softmax"

  config.resolution = arg.res
  config.batch_size = arg.batch
  config.total_steps = arg.steps
  config.warmup_steps = arg.steps // 10
  config_base.finetune_recipe(config)

  config_base.cadence(config, log=50, eval=500,
                      checkpoint=500, keep=2)
  return config
