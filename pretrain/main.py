r"""Pre-train an NFNet on a large, many-label image corpus.

    python -m pretrain.main --config pretrain/configs/synthetic.py \
        --workdir /tmp/nfnet_pretrain [--config.total_steps=500 ...]

Reads as the story of one run: setup, mesh, input, model and optimizer,
restore (resume > init_from > scratch), steps, loop (log, eval, checkpoint).
Re-running with the same workdir resumes at the saved step with the same data
order. SIGTERM saves a checkpoint and exits cleanly.
"""
from __future__ import annotations

import functools

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from data import from_config as data_from_config
from nfnet import builders, checkpoints, parallel, reporting, training

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with ':args'.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and "
                               "TensorBoard events go; re-use it to resume.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None, "Call jax.distributed.initialize() (default: when "
    "JAX_COORDINATOR_ADDRESS is set).")
flags.mark_flags_as_required(["config", "workdir"])


def train(config, workdir: str) -> dict[str, float]:
  """Runs (or resumes) one pre-training run; returns the final eval metrics."""
  # ------------------------------------------------------------------ Mesh
  mesh = parallel.make_data_mesh()
  parallel.check_batch_divisible(config.batch_size, mesh)
  writer = reporting.make_writer(workdir)
  logging.info("%d processes, %d devices (%s)", jax.process_count(),
               jax.device_count(), jax.default_backend())

  # ----------------------------------------------------------------- Input
  process = (jax.process_index(), jax.process_count())
  train_data = data_from_config.make_train_data(config, *process)
  eval_data = data_from_config.make_eval_data(config, *process)
  durations = builders.resolve_durations(config, train_data.num_examples)

  # ----------------------------------------------- Model and optimizer
  model = builders.build_model(config, train_data.num_classes)
  schedule, tx = builders.build_optimizer(config, durations)
  use_ema = config.ema_decay > 0  # pre-training: off in the paper
  run_description = builders.run_description(config, model, durations)

  # ---------------------------------- Restore: resume > init_from > scratch
  manager = checkpoints.make_manager(
      workdir, save_every_steps=config.checkpoint_every_steps,
      keep=config.keep_checkpoints, keep_every_steps=config.keep_every_steps)
  state = builders.restore_or_initialize(
      manager, model, tx, config, mesh, train_data.iterator, use_ema)
  start_step = int(state.step)
  if start_step >= durations.total_steps:
    logging.info("%s already holds the finished run (step %d).", workdir,
                 start_step)
    return builders.read_results(workdir)

  # ----------------------------------------------------------------- Steps
  train_step = builders.build_train_step(config, model, tx, schedule, mesh)
  eval_step = training.make_eval_step(model, mesh)
  run_evals = functools.partial(builders.evaluate, eval_step,
                                eval_batches=eval_data, mesh=mesh)

  # ------------------------------------------------------------------ Loop
  log = reporting.TrainLogger(writer, durations.total_steps, config.batch_size,
                              config.log_every_steps)
  guard = builders.PreemptionGuard()
  logging.info("Training %s from step %d to %d.", model.variant, start_step,
               durations.total_steps)
  eval_metrics = {}
  for step in range(start_step + 1, durations.total_steps + 1):
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      batch = parallel.to_global_batch(next(train_data.iterator), mesh)
      state, metrics = train_step(state, batch)
    log(step, metrics)
    last = step == durations.total_steps
    if eval_data and (step % config.eval_every_steps == 0 or last):
      eval_metrics = run_evals(builders.params_to_evaluate(state))
      writer.write_scalars(step, eval_metrics)
    stop = guard.should_stop(manager, step)
    checkpoints.save(manager, step, state, train_data.iterator,
                     run_description, force=last or stop)
    if stop:
      logging.info("Stopped at step %d after a preemption signal.", step)
      break
  manager.wait_until_finished()
  writer.flush()
  if step == durations.total_steps:
    builders.write_results(workdir, step, eval_metrics)
  return eval_metrics


def main(argv):
  del argv
  reporting.quiet_library_logs()
  parallel.maybe_initialize_distributed(_DISTRIBUTED.value)
  builders.run_with_clear_errors(train, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
