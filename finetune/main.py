r"""Fine-tune a pre-trained NFNet on a labelled image set, with SAM and EMA.

    python -m finetune.main --config finetune/configs/imagenet.py:res=384 \
        --workdir /ckpt/f4plus_ft384 --config.init_from=/ckpt/f4plus_pretrain

`init_from` takes a pre-training workdir (or one of its checkpoints), a
`python -m nfnet.convert` output, DeepMind's `*_haiku.npz` or a timm
`dm_nfnet_*` state dict. The head is re-initialised when the class count
differs (or with --config.reinit_head); any other mismatch stops the run with
one message listing every parameter. A checkpoint in the workdir always wins
over init_from (resume). Raw and EMA weights are both evaluated.

Reads as the story of one run, as pretrain/main.py does: setup, mesh, input,
model and optimizer, restore, steps, loop (log, eval, checkpoint).
"""
from __future__ import annotations

import functools

import jax
from absl import app, flags, logging

from data import from_config as data_from_config
from nfnet import builders, checkpoints, parallel, reporting, training

FLAGS = flags.FLAGS



def train(config, workdir: str) -> dict[str, float]:
  """Runs (or resumes) one fine-tuning run; returns the final eval metrics."""
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
  # The class count comes from the training source unless the config sets it,
  # so pointing data.train at another dataset just works.
  model = builders.build_model(config, train_data.num_classes)
  if not config.init_from:
    logging.warning("config.init_from is empty: fine-tuning from scratch "
                    "(a control run).")
  schedule, tx = builders.build_optimizer(config, durations)
  use_ema = config.ema_decay > 0
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
  logging.info("Fine-tuning %s from step %d to %d.", model.variant, start_step,
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
    logging.info("Final evaluation at %d px: %s", config.eval_resolution or
                 config.resolution, builders.format_metrics(eval_metrics))
  return eval_metrics


def main(argv):
  del argv
  reporting.quiet_library_logs()
  parallel.maybe_initialize_distributed(FLAGS.distributed)
  builders.run_with_clear_errors(train, FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  builders.define_program_flags()
  app.run(main)
