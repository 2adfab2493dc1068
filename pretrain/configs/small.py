r"""Pre-train a small NFNet on small real photos (32-64 px) on a laptop CPU.

    python -m pretrain.main --config pretrain/configs/small.py:classes=6 \
        --workdir /tmp/small_pretrain \
        --config.data.train='tfrecord:/data/photos/train-*' \
        --config.data.eval='tfrecord:/data/photos/eval-*'

What a first user trains: raw TFRecord / ArrayRecord shards (or an image
folder) of single-label photos around 32 px, `classes` given here when the
shards carry no dataset_info.json (add `--config.data.multi_label=True` for
several labels per image; `loss=sigmoid` then fits JFT-style data). Every
choice below was measured on real photos (CIFAR-10's natural photos and
Fashion-MNIST's product photos at 32 px, `benchmarks/transfer.py`; see the
README's tables):

- model: F0's topology at 1/4 width with one block per stage (1.4M
  parameters at 6 classes): the widest that trains thousands of steps in a
  few minutes on 2 cores. At the same step time, width 3/8 with a half-width
  stem (`width=0.375,stem_width=0.5`) pre-trained as well and fine-tuned 2
  points worse; a stride-2 stem (`stem_stride=2`) costs 1.7-2.3x per step
  and, at equal time, did worse;
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
  held the model back: on CIFAR-10, 3,500 steps reached 72.2% eval top-1
  with 0.01 and 74.8% with 0.04 (clipping 0.2-0.7% of units), fine-tuned to
  86.9 / 86.4% and 87.4 / 87.7% (seeds 0 / 1); 0.1 reached 74.4% and
  fine-tuned to 86.8%. lr 0.8 with 0.04 reached 72.7% and fine-tuned to
  84.4%. On CIFAR-10, weight decay 5e-4
  pre-trained better (74.1%) but shrank the standardised weights so far that
  fine-tuning broke the features (61.1%); batch 16 for 16,000 steps (the
  same time) reached 70.3% and fine-tuned to 80.4%.

`steps=N` sets the length: the default 3,500 steps took 458-505 s on 2
cores here, start-up and the two evaluations included, about an 8-minute
budget (4,000 steps took 420-650 s over a day, the spread being the machine's, and
transferred 0.7 points better on CIFAR-10; 4,000 transferred 2.3 points
better than 1,000 on Fashion-MNIST). `res` sets the resolution, `width` /
`depth` the model size, `stem_stride` / `stem_width` the stem, `crop` the
smallest crop area, `eval_crop` the kept fraction (0: the default).

Measured (`python benchmarks/transfer.py --split cifar10`): 74.8% eval top-1
on CIFAR-10's six pre-training classes after the default 3,500 steps (505 s),
then fine-tuned (finetune/configs/small.py's defaults) to 87.4% / 87.7% (two
fine-tune seeds) against 80.1% from scratch; at fine-tune batch 64, 86.8%
against 76.2%. The other CIFAR-10 numbers above were measured with AGC 0.01.
lr 0.1 with AGC 0.1 transferred the same as lr 0.4 with AGC 0.01 on
Fashion-MNIST.
"""
from nfnet.train import config_base


def get_config(arg=None):
  config, arg = config_base.small_image_config(arg, steps=3500, lr=0.4,
                                              warmup_divisor=20)
  config.weight_decay = 5e-5

  config_base.cadence(config, log=100, eval=max(1, arg.steps // 2),
                      checkpoint=max(1, arg.steps // 4), keep=1)
  return config
