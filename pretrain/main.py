r"""Pre-train an NFNet on a large, many-label image corpus.

    python -m pretrain.main --config pretrain/configs/synthetic.py \
        --workdir /tmp/nfnet_pretrain [--config.total_steps=500 ...]

Reads as the story of one run: setup, mesh, input, model and optimizer,
restore (resume > init_from > scratch), steps, loop (log, eval, few-shot
probes, checkpoint).
Re-running with the same workdir resumes at the saved step with the same data
order. SIGTERM saves a checkpoint and exits cleanly.
"""
from __future__ import annotations

import jax
from absl import app, flags, logging

from data import fewshot as data_fewshot
from data import from_config as data_from_config
from nfnet import (builders, checkpoints, fewshot, loop, parallel, reporting,
                   training)

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
  fewshot_sets = data_fewshot.make_fewshot_sets(config, *process)
  durations = builders.resolve_durations(config, train_data.num_examples)

  # ----------------------------------------------- Model and optimizer
  model = builders.build_model(config, train_data.num_classes)
  schedule, tx = builders.build_optimizer(config, durations)
  use_ema = config.ema_decay > 0  # pre-training: off in the paper
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
  periodic_evals = []
  if fewshot_sets:
    # Linear probes of the pre-logit features on downstream sets (raw weights).
    feature_step = fewshot.make_feature_step(model, mesh)
    probes = lambda state: fewshot.run_probes(
        feature_step, state.params, fewshot_sets, config.fewshot.shots,
        config.fewshot.heldout_per_class, mesh, config.fewshot.l2_regs,
        log=logging.info)
    periodic_evals.append(
        (config.fewshot_every_steps or config.eval_every_steps, probes))
  eval_metrics = loop.train_loop(
      config=config, state=state, train_step=train_step,
      data_iterator=train_data.iterator, evaluate=evaluate, mesh=mesh,
      manager=manager, writer=writer, total_steps=durations.total_steps,
      run_description=run_description, workdir=workdir,
      periodic_evals=periodic_evals)
  return eval_metrics


def main(argv):
  del argv
  reporting.quiet_library_logs()
  parallel.maybe_initialize_distributed(FLAGS.distributed)
  builders.run_with_clear_errors(train, FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  builders.define_program_flags()
  app.run(main)
