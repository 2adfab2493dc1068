r"""Pre-train a small NFNet on small real photos (32-64 px) on a laptop CPU.

    python -m pretrain.main --config pretrain/configs/small.py:classes=6 \
        --workdir /tmp/small_pretrain \
        --config.data.train='tfrecord:/data/photos/train-*' \
        --config.data.eval='tfrecord:/data/photos/eval-*'

What a first user trains: raw TFRecord / ArrayRecord shards (or an image
folder) of single-label photos around 32 px, `classes` given here when the
shards carry no dataset_info.json (add `--config.data.multi_label=True`, and
`--config.loss=sigmoid`, for several labels per image; on single-label
photos keep softmax, which transferred 2.7 points better). The partner of
finetune/configs/small.py. Each setting is the one that transferred best on
real photos (CIFAR-10 and Fashion-MNIST at 32 px, `benchmarks/transfer.py`);
the README's "Transfer on real photos" tables hold every variant measured:

- resolution 24 px (`res`), 3/4 of the fine-tune's 32 px: a step costs 0.65x
  a 32 px one and the features transfer as well, so the run fits 8 minutes
  on 2 cores. For larger photos set `res` to about 3/4 of the fine-tune's.
- model: F0's topology at 1/4 width, one block per stage, stem stride 4
  (1.4M parameters at 6 classes; `width`, `depth`, `stem_stride`,
  `stem_width`). Deeper, wider-bodied or stride-2-stem models in the same
  minutes transferred 2 or more points worse; a wider stem or a second
  first-stage block no better.
- crops: the reference's Inception sampler keeping 70-100% of the image
  (`crop`): this model underfits a few minutes of natural photos, and 35%
  crops transferred 0.9 points worse.
- eval: the whole image resized to S (`eval_crop`, the kept fraction;
  0: the default rule), since the paper's S + 32 margin keeps only the
  central half of each side at 32 px.
- optimizer: SGD-Nesterov + AGC 0.04, lr 0.4 at batch 64 (unscaled), 5%
  warm-up then cosine, weight decay 5e-5, float32 on CPU. The paper's AGC
  0.01 is for batches of thousands: at batch 64 it clipped 5-17% of the
  units every step and cost 2.6 points of pre-training top-1. Weight decay
  sets the scale of the weight-standardised convolutions, and with it the
  fine-tune's effective step: none cost 2.1 points downstream, 5e-4 broke
  the fine-tune, 1e-4 tied 5e-5 over three pre-training seeds.
- weight-standardised kernels held at norm 2 (`ws_kernel_norm`): their
  output does not depend on their scale, so SGD's effective step on them is
  lr / |w|^2, and without this the stem's kernels grew 3-4x while the
  body's stayed near their init's 1, so the stem, where the transfer lives,
  all but stopped learning. Held at 2 the pre-training reached 77.6-77.7%
  and fine-tuned (as loaded) to 88.9% over three pre-training seeds (each
  88.7% or more), against 88.2% (87.7-88.4%) without; at norm 1 (lr too hot for
  the body) 74.1% and 87.0%. Weight decay no longer acts on these kernels.
- length: 4,500 steps (`steps`): 350-411 s here on most days, past 8
  minutes in this machine's slowest hours (482 s at 9.4 steps a second),
  where `steps=4000` fits and transfers about 2 points worse. 6,000 steps,
  SAM, smaller batches for more steps, batch 128, 16 or 20 px, mixing or
  rotation labels spent the same minutes no better. Three times as long
  does pay: 13,500 steps (15-17 minutes here) fine-tuned to 90.0% over
  three pre-trainings, +12.7 over the from-scratch control; where the
  minutes allow, raise `steps`.

Measured (`python benchmarks/transfer.py --split cifar10 --seeds 0,1,2`,
on a 2-core host doing 12 steps a second): on CIFAR-10's six pre-training
classes 77.6% eval top-1 (at 24 px) in 418 s, then fine-tuned at 32 px
with finetune/configs/small.py (which re-centres the loaded kernels at
norm 1.4) to 89.4 / 89.0 / 89.4% (seeds 0-2) against 76.1 / 78.9 / 76.8%
from scratch with the same recipe (means 89.2% against 77.3%, +11.9);
over three pre-training seeds (`--pretrain-seed`) 89.25%, +11.96.
Fine-tuned as loaded (norm 2): 88.7%, and 88.9% (+11.6) over the three.
Before the fixed kernel norm, on Fashion-MNIST's four tops (`--split
tops`): 97.2% in 410 s, fine-tuned to 73.2% against 66.3% from
scratch (not re-measured since).
"""
from nfnet.train import config_base


def get_config(arg=None):
  config, arg = config_base.small_image_config(arg, steps=4500, lr=0.4,
                                              warmup_divisor=20, res=24)
  config.weight_decay = 5e-5
  # The weight-standardised kernels stay at norm 2 (their fresh init's is
  # about 1): left alone the stem's grew 3-4x and stopped learning early.
  config.ws_kernel_norm = 2.0

  config_base.cadence(config, log=100, eval=max(1, arg.steps // 2),
                      checkpoint=max(1, arg.steps // 4), keep=1)
  return config
