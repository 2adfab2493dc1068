r"""Pre-train a small NFNet on small real photos (32-64 px) on a laptop CPU.

    python -m pretrain.main --config pretrain/configs/small.py:classes=6 \
        --workdir /tmp/small_pretrain \
        --config.data.train='tfrecord:/data/photos/train-*' \
        --config.data.eval='tfrecord:/data/photos/eval-*'

What a first user trains: raw TFRecord / ArrayRecord shards (or an image
folder) of single-label photos around 32 px, `classes` given here when the
shards carry no dataset_info.json (add `--config.data.multi_label=True` for
several labels per image; `loss=sigmoid` then fits JFT-style data). Every
choice below was measured on real photos (Fashion-MNIST's product photos
upscaled to 32 px, `benchmarks/transfer.py`; see the README's table):

- model: F0's topology at 1/4 width with one block per stage (1.4M
  parameters at 6 classes): the widest that trains thousands of steps in a
  few minutes on 2 cores;
- crops: the reference's Inception sampler, but keeping 35-100% of the
  image (at 32 px an 8% crop is a 9-pixel patch blown up 3.5x);
- eval: the whole image resized to S (`eval_crop_fraction=1.0`); the paper's
  S + 32 margin would keep only the central half of each side at 32 px;
- optimizer: SGD-Nesterov + AGC 0.01, lr 0.4 at batch 64, 5% warm-up then
  cosine, weight decay 5e-5, float32 on CPU.

`steps=N` sets the length (the default 4,000 steps, evaluations included,
took 420-426 s on 2 cores here, inside an 8-minute budget; they transferred
2.3 points better than 1,000 steps on the tops split), `res` the resolution,
`width` / `depth` the model size, `crop` the smallest crop area, `eval_crop`
the kept fraction (0: the default).

Measured (`python benchmarks/transfer.py [--split related]`): 96.8% (tops
split) and 97.7% (related split) eval top-1 on the six pre-training classes
after the default 4,000 steps, in 426 s and 420 s. lr 0.1 with AGC 0.1, or
crops of 70-100%, transferred the same as these settings.
"""
from nfnet.train import config_base


def get_config(arg=None):
  config, arg = config_base.small_image_config(arg, steps=4000, lr=0.4,
                                              warmup_divisor=20)
  config.weight_decay = 5e-5

  config_base.cadence(config, log=100, eval=max(1, arg.steps // 4),
                      checkpoint=max(1, arg.steps // 4), keep=1)
  return config
