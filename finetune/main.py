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

import jax
from absl import app, flags, logging

from data import from_config as data_from_config
from nfnet import builders, checkpoints, loop, parallel, reporting, training

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
  run_description = builders.run_description(config, model, durations,
                                               train_data.label_names)
  builders.log_run_start(writer, model, config, durations, mesh)

  # ---------------------------------- Restore: resume > init_from > scratch
  manager = checkpoints.make_manager(
      workdir, save_every_steps=config.checkpoint_every_steps,
      keep=config.keep_checkpoints, keep_every_steps=config.keep_every_steps)
  state = builders.restore_or_initialize(
      manager, model, tx, config, mesh, train_data.iterator, use_ema)
  if int(state.step) >= durations.total_steps:
    logging.info("%s already holds the finished run (step %d).", workdir,
                 int(state.step))
    return builders.read_results(workdir)

  # ----------------------------------------------------------------- Steps
  train_step = builders.build_train_step(config, model, tx, schedule, mesh)
  eval_step = training.make_eval_step(model, mesh)

  # ------------------------------------------------------------------ Loop
  evaluate = None
  if eval_data:
    evaluate = lambda state: builders.evaluate(
        eval_step, builders.params_to_evaluate(state), eval_data, mesh)
  eval_metrics = loop.train_loop(
      config=config, state=state, train_step=train_step,
      data_iterator=train_data.iterator, evaluate=evaluate, mesh=mesh,
      manager=manager, writer=writer, total_steps=durations.total_steps,
      run_description=run_description, workdir=workdir)
  logging.info("Final evaluation at %d px: %s",
               config.eval_resolution or config.resolution,
               builders.format_metrics(eval_metrics))
  return eval_metrics


def main(argv):
  del argv
  reporting.quiet_library_logs()
  parallel.maybe_initialize_distributed(FLAGS.distributed)
  builders.run_with_clear_errors(train, FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  builders.define_program_flags()
  app.run(main)
