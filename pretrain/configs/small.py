r"""Pre-train a small NFNet on small real photos (32-64 px) on a laptop CPU.

    python -m pretrain.main --config pretrain/configs/small.py:classes=6 \
        --workdir /tmp/small_pretrain \
        --config.data.train='tfrecord:/data/photos/train-*' \
        --config.data.eval='tfrecord:/data/photos/eval-*'

What a first user trains: raw TFRecord / ArrayRecord shards (or an image
folder) of single-label photos around 32 px, `classes` given here when the
shards carry no dataset_info.json (add `--config.data.multi_label=True` for
several labels per image; `--config.loss=sigmoid` then fits JFT-style
data: on single-label photos keep softmax, since the sigmoid loss
pre-trained CIFAR-10's six classes as well, 75.0%, but fine-tuned to
85.7% against 88.4%, three-seed means). Every
choice below was measured on real photos (CIFAR-10's natural photos and
Fashion-MNIST's product photos at 32 px, `benchmarks/transfer.py`; see the
README's tables):

- resolution: 24 px, 3/4 of the fine-tune's 32 px (`res=24`; the model
  pools globally, so the checkpoint fine-tunes at any size). A step costs
  0.65x a 32 px step (72 against 112 ms of compute at batch 64), and in
  the same minutes the features transfer as well: on CIFAR-10, 4,500 steps
  at 24 px (411 s) fine-tuned (at batch 128, seeds 0 / 1) to 87.6% /
  87.3% against 80.1% from scratch in the same run, 5,000 steps (501 s in
  a slow hour) to 88.2% / 87.4%, and 3,500 steps at 32 px (458-505 s) to
  87.4% / 87.7%. The point is the budget: 3,500 steps at 32 px overran 8 minutes
  in slow hours. For larger photos set `res` to about 3/4 of the
  fine-tune's;
- model: F0's topology at 1/4 width with one block per stage (1.4M
  parameters at 6 classes): the widest that trains thousands of steps in a
  few minutes on 2 cores. At the same step time, width 3/8 with a half-width
  stem (`width=0.375,stem_width=0.5`) fine-tuned 2 points worse at 32 px
  (re-measured at 24 px below); a stride-2 stem (`stem_stride=2`) costs
  1.7-2.3x per step and, at equal time, did worse; two blocks per stage
  (`depth=2`, 1.6x per step) for 3,000 steps in the same minutes fine-tuned
  to 86.3% against the default's 88.4% (CIFAR-10, means of three seeds).
  Capacity where the transfer lives (the stem and first stage) fine-tuned as
  well, not better: a 1.25x wider stem (`stem_width=1.25`, 4,000 steps)
  88.5%, with its own from-scratch control a point higher (78.3% against
  77.3%), and a second block in the first stage (4,000 steps) 88.2% (77.5%
  from scratch). Re-measured with the 24 px default, width 3/8 with a
  half-width stem pre-trained to 70.7% (against 75.6%) and fine-tuned to
  85.2% (seed 0);
- crops: the reference's Inception sampler, keeping 70-100% of the image.
  This small model underfits a few minutes of natural photos (train top-1
  stays at eval top-1): on CIFAR-10's six pre-training classes crops of
  35% / 70% / 100% reached 67.9% / 71.7% / 75.1% eval top-1 in 4,000 steps
  and fine-tuned (unmixed) to 84.8% / 85.7% / 85.0% downstream;
- eval: the whole image resized to S (`eval_crop_fraction=1.0`); the paper's
  S + 32 margin would keep only the central half of each side at 32 px;
- optimizer: SGD-Nesterov + AGC 0.04, lr 0.4 at batch 64, 5% warm-up then
  cosine, weight decay 5e-5, float32 on CPU. The paper's AGC 0.01 is for
  batches of thousands; at batch 64 it clipped 5-17% of the units every step and
  held the model back: on CIFAR-10 at 32 px, 3,500 steps reached 72.2% top-1
  with 0.01 and 74.8% with 0.04 (clipping 0.2-0.7% of units), fine-tuned to
  86.9 / 86.4% and 87.4 / 87.7% (seeds 0 / 1); 0.1 reached 74.4% and
  fine-tuned to 86.8%. lr 0.8 with 0.04 reached 72.7% and fine-tuned to
  84.4%. On CIFAR-10, weight decay 5e-4
  pre-trained better (74.1%) but shrank the standardised weights so far that
  fine-tuning broke the features (61.1%); batch 16 for 16,000 steps (the
  same time) reached 70.3% and fine-tuned to 80.4%. At 24 px (three-seed
  means against 88.4%): no weight decay left the weights' norm at 117
  against 93 and fine-tuned to 86.3%, 2e-4 to 88.1%, 1e-4 to 88.9% and,
  at pre-training seeds 1 and 2, 87.2% and 87.9% (the default's: 87.9%
  and 88.2%), so over three pre-trainings 1e-4 averages 88.0% and 5e-5
  88.2%; lr 0.2 fitted the six classes better (76.5%) and fine-tuned to
  87.7%.

`steps=N` sets the length. The default 4,500 steps at 24 px took 350 s,
405 s, 411 s and 445-507 s on 2 cores here on four days, start-up and the
two evaluations included: the machine's speed differs by up to 1.5x, and its
slowest hours (9-10 steps a second) overran 8 minutes. For a hard 8-minute
limit on such a machine use `steps=4000` (302 s on the fastest day, about
450 s at 9 steps a second), which fine-tuned about 2 points lower (86.2%
against 88.4% on the same day, means of three seeds); 6,000 steps (442 s on
that day) fine-tuned no better than 4,500 (88.2%), nor did the other ways to
spend the minutes (three-seed means against 88.4%): SAM rho 0.05 for
4,000 steps (448 s, 87.3%), batch 32 for 8,000 steps (431 s, 87.0%), batch
128 at lr 0.6 for 2,450 (349 s, 88.4%), 20 px for 6,000 (458 s, 88.2%),
crops of 50-100% (88.3%), or 24 px windows of the photos at their own scale
instead of resized crops (88.1%); rotation labels (class x 4 rotations) cost
3.6 points (84.8%). The other settings above were chosen at 32 px, where
4,000 steps transferred 0.7 points better than 3,500 on CIFAR-10 and 2.3
points better than 1,000 on Fashion-MNIST. `res` sets the resolution,
`width` / `depth` the model size, `stem_stride` / `stem_width` the stem,
`crop` the smallest crop area, `eval_crop` the kept fraction (0: the
default).

Measured (`python benchmarks/transfer.py --split cifar10 --seeds 0,1,2`):
75.6% eval top-1 (at 24 px) on CIFAR-10's six pre-training classes after
the default 4,500 steps (350 s), then fine-tuned at 32 px
(finetune/configs/small.py's defaults) to 88.3% / 88.6% / 88.4% (seeds 0-2)
against 76.1% / 78.9% / 76.8% from scratch with the same recipe: means
88.4% against 77.3%, +11.1. On an earlier day the same run reached 76.1%
and fine-tuned to 87.8% / 87.1% / 88.1% (+10.4); pre-training seeds 1 and 2
(`config.seed`) fine-tuned to means of 87.9% and 88.2%, so over three
pre-trainings the default gives 88.2%, +10.9. From scratch at batch 128
seed 0 reaches 80.1%. On Fashion-MNIST's four tops (`--split tops`) the
same defaults pre-trained to 97.2% in 410 s and fine-tuned to 73.2% against
66.3% (69.2% at batch 128) from scratch; at fine-tune batch 128, 3,500
steps at 32 px had given 71.4% and these 4,500 steps at 24 px 73.5%. The
crop and model numbers above were measured with AGC 0.01.
"""
from nfnet.train import config_base


def get_config(arg=None):
  config, arg = config_base.small_image_config(arg, steps=4500, lr=0.4,
                                              warmup_divisor=20, res=24)
  config.weight_decay = 5e-5

  config_base.cadence(config, log=100, eval=max(1, arg.steps // 2),
                      checkpoint=max(1, arg.steps // 4), keep=1)
  return config
