r"""Fine-tune the synthetic pre-training checkpoint on the downstream set.

    python -m finetune.main --config finetune/configs/synthetic.py:data_dir=/tmp/synth \
        --workdir /tmp/nfnet_synth_finetune \
        --config.init_from=/tmp/nfnet_synth_pretrain

The downstream set (data/synthetic.py) has 16 single-label classes (shape x
pattern, colour a nuisance) with 40 training images each, fine-tuned at 48 px
(the checkpoint was pre-trained at 32 px; patterns are easier to see at 48). The recipe is the
paper's fine-tune in miniature: SGD-Nesterov + AGC, SAM rho 0.05 on 20% of
the batch, weight decay 1e-5, EMA with warm-up (decay 0.99 for a run this
short), raw and EMA weights evaluated on the held-out split. Leave init_from
empty for the from-scratch control: recipes/demo.sh runs both and prints the
two top-1s side by side. Measured here: 86.2% top-1 (EMA 86.2%) fine-tuned
from the demo's pre-training, 70.8% (EMA 71.0%) from scratch.
"""
from nfnet.train import config_base


def get_config(arg=None):
  arg = config_base.parse_arg(arg, data_dir="", steps=300, res=48)
  config = config_base.base_config()
  config_base.synthetic_run(config, arg.data_dir, "downstream", arg.res,
                            arg.steps)
  config.warmup_steps = arg.steps // 10
  config_base.finetune_recipe(config, ema_decay=0.99)

  config_base.cadence(config, log=50, eval=100,
                      checkpoint=300, keep=1)
  return config
