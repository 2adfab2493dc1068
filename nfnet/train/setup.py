"""Config -> the run's objects: model, run length, optimizer, train step."""
from __future__ import annotations

import dataclasses
import re

import ml_collections
import optax
from jax.sharding import Mesh

from nfnet import optim
from nfnet.errors import UserError
from nfnet.model import NFNet
from nfnet.train import training
from nfnet.train.config_base import model_kwargs


def check_run_config(config: ml_collections.ConfigDict) -> None:
  """Refuses, before anything is built, values that would only fail later
  (a cadence of 0 divides by zero after the first step; keeping 0
  checkpoints deletes the final one)."""
  for key in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps",
              "keep_checkpoints"):
    if config[key] < 1:
      raise UserError(f"{key} must be at least 1, got {config[key]}.")
  if config.fewshot_every_steps is not None and config.fewshot_every_steps < 1:
    raise UserError("fewshot_every_steps must be at least 1 (or None: with "
                    f"the evals), got {config.fewshot_every_steps}.")
  if not 0 <= config.ema_decay < 1:
    raise UserError(f"ema_decay must be in [0, 1) (0: no EMA), got "
                    f"{config.ema_decay}.")
  if config.batch_size < 1:
    raise UserError(f"batch_size must be positive, got {config.batch_size}.")
  if config.loss not in training.LOSSES:
    raise UserError(f"loss must be one of {training.LOSSES}, got "
                    f"{config.loss!r}.")
  if config.eval_crop_fraction is not None and not (
      0 < config.eval_crop_fraction <= 1):
    raise UserError("eval_crop_fraction must be in (0, 1] (None: the "
                    f"default rule), got {config.eval_crop_fraction}.")
  if config.sam_rho and not 0 < config.sam_ascent_fraction <= 1:
    raise UserError("sam_ascent_fraction must be in (0, 1], got "
                    f"{config.sam_ascent_fraction}.")
  check_lr_multipliers(config.get("lr_multipliers", ()))
  for key in ("ws_kernel_norm", "init_ws_kernel_norm"):
    if config.get(key) is not None and not config[key] > 0:
      raise UserError(f"{key} must be positive (None: off), got "
                      f"{config[key]}.")
  build_model(config, config.model.num_classes or 1).check_fields()


def check_lr_multipliers(multipliers) -> None:
  """Each entry a (regular expression, multiplier >= 0) pair."""
  for entry in multipliers:
    if (not isinstance(entry, (tuple, list)) or len(entry) != 2
        or not isinstance(entry[0], str)
        or not isinstance(entry[1], (int, float)) or entry[1] < 0):
      raise UserError("lr_multipliers must be (regex, multiplier >= 0) pairs, "
                      f"e.g. (('stem_conv.*', 0.5),); got {entry!r}.")
    try:
      re.compile(entry[0])
    except re.error as e:
      raise UserError(f"lr_multipliers pattern {entry[0]!r}: {e}.") from None


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> NFNet:
  return NFNet(**model_kwargs(config.model, num_classes))


@dataclasses.dataclass(frozen=True)
class Durations:
  """The run's length in steps, resolved once from steps, epochs or examples."""

  total_steps: int
  warmup_steps: int
  steps_per_epoch: float


def resolve_durations(config: ml_collections.ConfigDict,
                      num_train_examples: int) -> Durations:
  steps_per_epoch = num_train_examples / config.batch_size
  total = optim.duration_to_steps(
      steps=config.total_steps, epochs=config.total_epochs,
      examples=config.total_examples, batch_size=config.batch_size,
      num_examples=num_train_examples, name="total")
  warmup = optim.duration_to_steps(
      steps=config.warmup_steps, epochs=config.warmup_epochs, examples=None,
      batch_size=config.batch_size, num_examples=num_train_examples,
      name="warmup", default=0)
  return Durations(total, warmup, steps_per_epoch)


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
  """`lr * batch / 256` when the recipe scales it (training from scratch)."""
  if config.lr_batch_scaling:
    return optim.scale_learning_rate(config.lr, config.batch_size)
  return config.lr


def build_optimizer(config: ml_collections.ConfigDict, durations: Durations):
  schedule = optim.warmup_cosine_schedule(
      peak_learning_rate(config), warmup_steps=durations.warmup_steps,
      total_steps=durations.total_steps)
  tx = optim.sgd_agc(schedule, momentum=config.momentum,
                     weight_decay=config.weight_decay,
                     clipping=config.agc_clipping or None)
  if config.get("lr_multipliers"):
    tx = optax.chain(tx, optim.scale_by_lr_multipliers(
        [tuple(pair) for pair in config.lr_multipliers]))
  if config.get("ws_kernel_norm"):
    tx = optax.chain(tx, optim.fix_ws_kernel_norm(config.ws_kernel_norm))
  return schedule, tx


def build_train_step(config: ml_collections.ConfigDict, model: NFNet, tx,
                     schedule, mesh: Mesh):
  return training.make_train_step(
      model, tx, mesh, loss=config.loss, sam_rho=config.sam_rho,
      sam_ascent_fraction=config.sam_ascent_fraction,
      ema_decay=config.ema_decay or None, micro_batches=config.micro_batches,
      learning_rate_fn=schedule, agc_clipping=config.agc_clipping or None,
      seed=config.seed, diagnostics_every_steps=config.log_every_steps)
