"""The config vocabulary both programs share.

Every program config starts from `base_config()` and sets what its recipe
needs, so any config can be pointed at other data or sizes from the command
line (`--config.data.train='arrayrecord:/data/jft/train-*.array_record'`,
`--config.batch_size=256`, `--config.model.variant=F1`). Configs are locked:
a mistyped key fails instead of being silently ignored.
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict
from nfnet.errors import UserError

placeholder = config_dict.placeholder


def model_config(variant: str = "F0") -> ml_collections.ConfigDict:
  """Every knob of `nfnet.NFNet`; None/placeholders keep the variant's default."""
  return ml_collections.ConfigDict({
      "variant": variant,
      "num_classes": placeholder(int),  # None: taken from the training data.
      "width": 1.0,
      "depths": placeholder(tuple),
      "group_size": 128,
      "activation": placeholder(str),
      "alpha": 0.2,
      "stochdepth_rate": 0.1,
      "drop_rate": placeholder(float),
      "se_ratio": 0.5,
      "use_two_convs": True,
      "final_conv_mult": 2.0,
      "head_bias_init": 0.0,
      "dtype": "bfloat16",
      "remat": False,
      "conv_impl": "auto",
      "ws_eps": 1e-4,
      "ws_eps_mode": "floor",
      "stem_stride": 4,   # 2 or 1 keeps more resolution for small images
      "stem_width": 1.0,  # multiplies the stem's 16/32/64 channels
  })


def small_image_model(model: ml_collections.ConfigDict, width: float = 0.25,
                      depth: int = 1, stem_stride: int = 4,
                      stem_width: float = 1.0) -> None:
  """The small-image configs' NFNet: F0's topology at `width`, `depth` blocks
  per stage, the stem's stride and width, group width 32, float32 (fastest
  on CPU), no dropout or stochastic depth (too few blocks and steps to need
  them)."""
  model.update(variant="F0", width=width, depths=(depth,) * 4, group_size=32,
               stem_stride=stem_stride, stem_width=stem_width,
               dtype="float32", stochdepth_rate=0.0, drop_rate=0.0)


def data_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "train": "",        # source string: arrayrecord:GLOB, tfrecord:GLOB, tfds:NAME/SPLIT, folder:PATH
      "eval": "",         # same; empty: no evaluation
      # None: the source's default (image/class/label for tf.train.Example
      # shards, label for TFDS).
      "label_key": placeholder(str),
      # Raw shards without dataset_info.json: say whether an image may carry
      # several labels (None: the source's metadata decides, else single).
      # The class count is model.num_classes.
      "multi_label": placeholder(bool),
      "num_workers": 2,   # loader worker processes per host; 0: in-process
      "skip_corrupt": False,
      # Nominal size of the training split, used only where the data is not
      # opened (recipes' --dry-run); real runs count the source's records.
      "train_examples": placeholder(int),
  })


def augment_config() -> ml_collections.ConfigDict:
  """Crop+flip always; RandAugment and MixUp/CutMix for ImageNet from scratch."""
  return ml_collections.ConfigDict({
      "crop_area_min": 0.08,  # Inception crop keeps 8%..100% of the image
      "randaugment_layers": 0,
      "randaugment_magnitude": placeholder(int),  # None: the variant's
      # Translate's and Cutout's pixel amounts hold at this image side and
      # scale with the image's (None: absolute, as the reference, which sets
      # them for ImageNet-sized images).
      "randaugment_reference_side": placeholder(int),
      "mixup_cutmix": False,
      "label_smoothing": 0.0,
  })


def fewshot_config() -> ml_collections.ConfigDict:
  """Few-shot linear probes of the features during pre-training (pretrain/fewshot.py).

  `datasets` maps a name to {"train": SOURCE, "test": SOURCE} (single-label
  sources, e.g. dict(train="folder:/data/flowers/train",
  test="folder:/data/flowers/val")); empty: no probes.
  """
  return ml_collections.ConfigDict({
      "datasets": {},
      "shots": (1, 5, 10),
      # Extra train-split examples per class that choose the ridge strength.
      "heldout_per_class": 5,
      "l2_regs": tuple(2.0 ** i for i in range(-10, 20)),
      # Train-split records whose labels are read (once) to draw the shots.
      "scan_examples": 50_000,
      "batch_size": placeholder(int),  # None: the run's batch_size
      "resolution": placeholder(int),  # None: eval_resolution, else resolution
  })


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = model_config()
  config.data = data_config()
  config.augment = augment_config()
  config.fewshot = fewshot_config()
  config.loss = "softmax"            # or "sigmoid" for multi-label corpora

  config.batch_size = 4096           # global, over all hosts and devices
  config.micro_batches = 1           # gradient accumulation per device
  # One of these three sets the length of the run.
  config.total_steps = placeholder(int)
  config.total_epochs = placeholder(float)
  config.total_examples = placeholder(int)
  config.warmup_steps = placeholder(int)
  config.warmup_epochs = placeholder(float)
  config.resolution = 224
  config.eval_resolution = placeholder(int)  # None: same as training
  # Eval keeps this fraction of each side (resize whole image to S / f, centre
  # crop S). None: the paper's S / (S + 32) from 224 px up, and at least 0.875
  # below, where the paper's margin would keep only half of a 32 px image.
  config.eval_crop_fraction = placeholder(float)
  # Also score each eval image by the mean of its and its mirror image's class
  # probabilities (`eval/flip_top1` beside `eval/top1`): twice the eval compute.
  config.eval_flip_average = False

  config.lr = 0.1                    # peak learning rate
  config.lr_batch_scaling = True     # lr * batch_size / 256
  config.momentum = 0.9
  config.weight_decay = 2e-5
  # (regex, multiplier) pairs: a parameter whose whole path (e.g.
  # `stem_conv0/kernel`) matches a pattern steps at lr x multiplier (the
  # first match wins); a pattern matching nothing is an error.
  config.lr_multipliers = ()
  # A positive value keeps every weight-standardised conv kernel's output
  # units centred at this L2 norm after each step (optim.fix_ws_kernel_norm),
  # so their effective step does not shrink as the kernels grow. None: off.
  config.ws_kernel_norm = placeholder(float)
  config.agc_clipping = 0.01         # 0 disables AGC
  config.sam_rho = 0.0               # 0 disables SAM
  config.sam_ascent_fraction = 0.2
  config.ema_decay = 0.0             # 0 disables EMA

  config.init_from = ""              # checkpoint/workdir, *_haiku.npz, timm file
  config.reinit_head = False
  # A positive value re-centres init_from's weight-standardised kernels at
  # this per-unit L2 norm when they are loaded (optim.ws_kernels_at_norm):
  # the same function, but the fine-tune's effective step on them becomes
  # lr / norm^2. Nothing is loaded without init_from, so a from-scratch
  # control with the same config is unaffected. None: as loaded.
  config.init_ws_kernel_norm = placeholder(float)
  config.seed = 0

  config.log_every_steps = 50
  config.eval_every_steps = 1000
  config.fewshot_every_steps = placeholder(int)  # None: eval_every_steps
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.keep_every_steps = placeholder(int)
  return config


# ----------------------------------------------------------------------------
# Pieces the program configs share, so each config states only its recipe.
# ----------------------------------------------------------------------------

# The small-image configs' `:args` (pretrain/ and finetune/configs/small.py).
SMALL_IMAGE_ARGS = dict(classes=0, res=32, width=0.25, depth=1, stem_stride=4,
                        stem_width=1.0, batch=64, crop=0.7, eval_crop=1.0)


def cadence(config: ml_collections.ConfigDict, *, log: int, eval: int,  # pylint: disable=redefined-builtin
            checkpoint: int, keep: int, keep_every: int | None = None) -> None:
  """How often the run logs, evaluates and checkpoints, and which
  checkpoints it keeps (the latest `keep`, plus every `keep_every`-th step)."""
  config.log_every_steps = log
  config.eval_every_steps = eval
  config.checkpoint_every_steps = checkpoint
  config.keep_checkpoints = keep
  config.keep_every_steps = keep_every


def small_image_config(arg: str | None, *, steps: int, lr: float,
                       warmup_divisor: int, **arg_defaults):
  """(config, parsed arg) of a small-image config (SMALL_IMAGE_ARGS plus
  `steps` and `lr`, with `arg_defaults` replacing any of their defaults),
  warming up over the first 1/`warmup_divisor` steps."""
  arg = parse_arg(arg, **{**SMALL_IMAGE_ARGS, "steps": steps, "lr": lr,
                          **arg_defaults})
  config = base_config()
  small_images(config, arg)
  config.warmup_steps = max(1, arg.steps // warmup_divisor)
  return config, arg


def small_images(config: ml_collections.ConfigDict, arg) -> None:
  """A run on small images (CIFAR-like): the small-image model, in-process
  loading, the crop and eval-crop from `arg` (SMALL_IMAGE_ARGS plus `steps`
  and `lr`), softmax, an unscaled lr and AGC 0.04 (a fine-tune's recipe
  sets its own)."""
  small_image_model(config.model, arg.width, arg.depth, arg.stem_stride,
                    arg.stem_width)
  if arg.classes:
    config.model.num_classes = arg.classes
  config.data.num_workers = 0
  config.augment.crop_area_min = arg.crop
  # If RandAugment is turned on: the reference's 100 px shifts would move a
  # 32 px image off its canvas, so shift in proportion to the image.
  config.augment.randaugment_reference_side = 224
  # 0: the default (the paper's S / (S + 32), at least 0.875 of each side).
  config.eval_crop_fraction = arg.eval_crop or None
  config.loss = "softmax"
  config.resolution = arg.res
  config.batch_size = arg.batch
  config.total_steps = arg.steps
  config.lr = arg.lr
  config.lr_batch_scaling = False
  # The paper's 0.01 is for batches of thousands: at batch 64 it clipped
  # 5-17% of the units every step of the CIFAR-10 pre-training and slowed
  # learning (72.2% against 74.8% top-1 in 3,500 steps at 32 px); 0.04 clips
  # under 1%.
  config.agc_clipping = 0.04


def synthetic_run(config: ml_collections.ConfigDict, data_dir: str,
                  corpus: str, resolution: int, steps: int) -> None:
  """A run on one corpus of data/synthetic.py's output (`corpus`: pretrain
  or downstream) with the small-image model, batch 64 at `resolution`."""
  small_image_model(config.model)
  if data_dir:
    config.data.train = f"arrayrecord:{data_dir}/{corpus}/train-*.array_record"
    config.data.eval = f"arrayrecord:{data_dir}/{corpus}/eval-*.array_record"
  config.data.num_workers = 0
  # Labels name every object in the image: crops must keep most of it.
  config.augment.crop_area_min = 0.5
  config.loss = "softmax"
  config.resolution = resolution
  config.batch_size = 64
  config.total_steps = steps
  config.lr_batch_scaling = False
  config.agc_clipping = 0.01


def finetune_recipe(config: ml_collections.ConfigDict, *, lr: float = 0.1,
                    weight_decay: float = 1e-5, sam_rho: float = 0.05,
                    ema_decay: float = 0.9999,
                    agc_clipping: float = 0.01) -> None:
  """The paper's fine-tune optimizer: SGD at `lr` (not batch-scaled) + AGC
  (0.01, the paper's threshold for batches of 1024 and more), weight decay
  1e-5, SAM rho 0.05 on a fifth of each batch, EMA."""
  config.lr = lr
  config.lr_batch_scaling = False
  config.weight_decay = weight_decay
  config.agc_clipping = agc_clipping
  config.sam_rho = sam_rho
  config.sam_ascent_fraction = 0.2
  config.ema_decay = ema_decay


def runlocal(config: ml_collections.ConfigDict, *, variant: str | None = None,
             eval_resolution: int | None = None) -> None:
  """`runlocal=True` of the big recipes: a 20-step smoke run on one CPU (an
  F-topology at 1/8 width, one block per stage, batch 16 at 64 px)."""
  if variant is not None:
    config.model.variant = variant
  config.model.update(width=0.125, depths=(1, 1, 1, 1), group_size=16,
                      remat=False, dtype="float32")
  config.batch_size = 16
  config.resolution = 64
  if eval_resolution is not None:
    config.eval_resolution = eval_resolution
  config.total_epochs = None
  config.total_steps = 20
  config.warmup_epochs = None
  config.warmup_steps = 2
  config.data.num_workers = 0
  config.log_every_steps = config.eval_every_steps = 10
  config.checkpoint_every_steps = 10
  config.keep_every_steps = None


def model_kwargs(model: ml_collections.ConfigDict, num_classes: int) -> dict:
  """Config -> `NFNet(**kwargs)`, dropping unset optional knobs."""
  kwargs = {k: v for k, v in model.to_dict().items() if v is not None}
  kwargs["num_classes"] = model.num_classes or num_classes
  if "depths" in kwargs:
    kwargs["depths"] = tuple(kwargs["depths"])
  kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
  return kwargs


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'variant=F4+,res=320' -> ConfigDict, typed by the defaults given.

  >>> parse_arg("variant=F1,runlocal=True", variant="F0", runlocal=False).variant
  'F1'
  """
  parsed = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise UserError(f"Unknown config argument {key!r}; known: "
                       f"{', '.join(defaults)}.")
    default = defaults[key]
    try:
      if isinstance(default, bool):
        parsed[key] = _parse_bool(value)
      else:
        parsed[key] = type(default)(value) if default is not None else value
    except ValueError:
      raise UserError(f"Config argument {key}={value!r} is not a "
                      f"{type(default).__name__}.") from None
  return parsed


def _parse_bool(value: str) -> bool:
  # A typo must not read as False: `runlocal=ture` would launch a pod run.
  if value.lower() in ("1", "true", "yes"):
    return True
  if value.lower() in ("0", "false", "no"):
    return False
  raise ValueError(value)
