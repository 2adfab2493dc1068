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

from data import from_config as data_from_config
from nfnet import builders, checkpoints, parallel, reporting, training

FLAGS = flags.FLAGS



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
  summary = builders.run_summary(model, config, durations, mesh)
  logging.info(summary)
  writer.write_texts(0, {"run": summary})
  writer.write_hparams(builders.flat_hparams(config))

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
      host_batch = next(train_data.iterator)
      state, metrics = train_step(state, parallel.to_global_batch(host_batch, mesh))
    if step == 1:
      writer.write_images(0, {"train_images": builders.image_grid(
          host_batch["image"][:32])})
    last = step == durations.total_steps
    stop = guard.should_stop(manager, step)
    # Flush (and check for a non-finite loss) before anything is saved.
    log(step, metrics, flush=last or stop or manager.should_save(step))
    if eval_data and (step % config.eval_every_steps == 0 or last):
      eval_metrics = run_evals(builders.params_to_evaluate(state))
      writer.write_scalars(step, eval_metrics)
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
  parallel.maybe_initialize_distributed(FLAGS.distributed)
  builders.run_with_clear_errors(train, FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  builders.define_program_flags()
  app.run(main)
