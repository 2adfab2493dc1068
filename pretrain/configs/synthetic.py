r"""A tiny NFNet pre-trained on the embedded synthetic corpus, on a laptop CPU.

    python -m data.synthetic --out /tmp/synth
    python -m pretrain.main --config pretrain/configs/synthetic.py \
        --workdir /tmp/nfnet_synth_pretrain \
        --config.data.train='arrayrecord:/tmp/synth/pretrain/train-*.array_record' \
        --config.data.eval='arrayrecord:/tmp/synth/pretrain/eval-*.array_record'

The corpus (data/synthetic.py) has 1000 multi-label classes (shape x colour x
pattern, 2-4 objects per image). The model is F0's topology at 1/4 width with
one block per stage (~2.2M parameters), trained at 32 px with the JFT recipe's
optimizer (SGD-Nesterov + AGC 0.01, weight decay 1e-6) and softmax
cross-entropy over the normalised multi-hot targets (it learns this corpus
much faster in a few minutes than the per-class sigmoid of the JFT config). On 2 CPU cores 1,200 steps of batch 64 take a few
minutes; precision@1 on the eval split climbs from chance (~0.3%) to well
above it (the demo's table reports the measured value).

With `data_dir` set (and unless `fewshot=False`), every `fewshot_every_steps` (= 400) the pre-logit
features are probed on the 16-class downstream set: ridge regression on 1, 5
and 10 images per class (regularisation chosen on 5 more per class), scored
on its 400 held-out images and logged as `fewshot/downstream_{1,5,10}shot`
(chance: 6.25%).
"""
from nfnet.train import config_base


def get_config(arg=None):
  arg = config_base.parse_arg(arg, data_dir="", steps=1200, res=32, fewshot=True)
  config = config_base.base_config()
  # Softmax over the normalised multi-hot targets (see above).
  config_base.synthetic_run(config, arg.data_dir, "pretrain", arg.res, arg.steps)
  if arg.data_dir and arg.fewshot:
    config.fewshot.datasets = {"downstream": {
        "train": f"arrayrecord:{arg.data_dir}/downstream/train-*.array_record",
        "test": f"arrayrecord:{arg.data_dir}/downstream/eval-*.array_record"}}
  config.warmup_steps = arg.steps // 20
  config.lr = 0.4
  config.weight_decay = 1e-6

  config.fewshot_every_steps = 400
  config.fewshot.shots = (1, 5, 10)
  config.fewshot.heldout_per_class = 5
  config_base.cadence(config, log=50, eval=400,
                      checkpoint=400, keep=2)
  return config
