"""Config -> the run's objects: model, run length, optimizer, train step."""
from __future__ import annotations

import dataclasses

import ml_collections
from jax.sharding import Mesh

from nfnet import optim
from nfnet.model import NFNet
from nfnet.train import training
from nfnet.train.config_base import model_kwargs


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
  return schedule, tx


def build_train_step(config: ml_collections.ConfigDict, model: NFNet, tx,
                     schedule, mesh: Mesh):
  return training.make_train_step(
      model, tx, mesh, loss=config.loss, sam_rho=config.sam_rho,
      sam_ascent_fraction=config.sam_ascent_fraction,
      ema_decay=config.ema_decay or None, micro_batches=config.micro_batches,
      learning_rate_fn=schedule, agc_clipping=config.agc_clipping or None,
      seed=config.seed, diagnostics_every_steps=config.log_every_steps)
