"""The one training run both programs make, told top to bottom.

    mesh -> input -> model and optimizer -> restore (resume > init_from >
    scratch) -> steps -> loop:
        for each step: next host batch -> global batch -> train_step
                       log (flushed, and checked for NaN, before any save)
                       save every `checkpoint_every_steps`, at the end, or
                       when a preemption signal arrives
                       evals every `eval_every_steps` and at the end
                       (after a preemption signal: stop cleanly)
    -> results.json

What differs between pre-training and fine-tuning is data: the config, and a
`Program` naming the program's own evaluators and notes (pretrain/main.py:
the few-shot probes; finetune/main.py: the control-run warning and the final
evaluation line). The loss (softmax or multi-label sigmoid), SAM, EMA, head
surgery and the eval resolution are config keys the shared pieces read.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
from absl import logging
from jax.sharding import Mesh

from nfnet.errors import UserError
from nfnet.train import (checkpoints, evaluation, from_config, metrics,
                         parallel, preemption, results, setup, state as
                         state_lib, training)

# (every_steps, fn(state) -> metrics): an evaluation on its own cadence, also
# run at the last step; its latest values are logged and kept in results.json.
PeriodicEval = tuple[int, Callable[[Any], dict]]


@dataclasses.dataclass(frozen=True)
class RunContext:
  """What a program's hooks may read about the run being set up."""

  config: Any
  model: Any
  mesh: Mesh
  process_index: int
  process_count: int


@dataclasses.dataclass(frozen=True)
class Program:
  """What one program adds to the shared run, as plain functions."""

  name: str
  # Called once the model is built (warnings about the setup, ...).
  on_start: Callable[[RunContext], None] = lambda run: None
  # The program's own evaluators, besides the eval split's exact pass.
  periodic_evals: Callable[[RunContext], Sequence[PeriodicEval]] = (
      lambda run: ())
  # Called with the final metrics of a run that reached its last step here.
  on_finish: Callable[[RunContext, dict], None] = lambda run, metrics: None


def train(config, workdir: str, program: Program) -> dict[str, float]:
  """Runs (or resumes) one run; returns the final eval metrics."""
  # ------------------------------------------------------------------ Mesh
  setup.check_run_config(config)
  mesh = parallel.make_data_mesh()
  parallel.check_batch_divisible(config.batch_size, mesh, config.micro_batches)
  writer = metrics.make_writer(workdir)
  logging.info("%s: %d processes, %d devices (%s)", program.name,
               jax.process_count(), jax.device_count(), jax.default_backend())

  # ----------------------------------------------------------------- Input
  process = (jax.process_index(), jax.process_count())
  train_data = from_config.make_train_data(config, *process)
  eval_data = from_config.make_eval_data(config, *process,
                                         train_data.label_names)
  durations = setup.resolve_durations(config, train_data.num_examples)

  # ----------------------------------------------------- Model, optimizer
  # The class count comes from the training source unless the config sets it,
  # so pointing data.train at another dataset just works.
  model = setup.build_model(config, train_data.num_classes)
  run = RunContext(config, model, mesh, *process)
  program.on_start(run)
  schedule, tx = setup.build_optimizer(config, durations)
  use_ema = config.ema_decay > 0
  description = state_lib.run_description(config, model, durations,
                                          train_data.label_names,
                                          train_data.multi_label)
  metrics.log_run_start(writer, model, config, durations, mesh)

  # ---------------------------------- Restore: resume > init_from > scratch
  manager = checkpoints.make_manager(
      workdir, save_every_steps=config.checkpoint_every_steps,
      keep=config.keep_checkpoints, keep_every_steps=config.keep_every_steps)
  state = state_lib.restore_or_initialize(
      manager, model, tx, config, mesh, train_data.iterator, use_ema)
  start_step, total_steps = int(state.step), durations.total_steps
  finished = results.read_results(workdir) if start_step >= total_steps else {}
  if finished:
    logging.info("%s already holds the finished run (step %d).", workdir,
                 start_step)
    return finished
  if start_step > total_steps:
    raise UserError(
        f"{workdir} holds a checkpoint at step {start_step}, past this "
        f"config's {total_steps} steps: give the run at least {start_step} "
        "steps, or a new workdir (with --config.init_from to start from it).")

  # ----------------------------------------------------------------- Steps
  train_step = setup.build_train_step(config, model, tx, schedule, mesh)
  eval_step = training.make_eval_step(
      model, mesh, flip_average=config.eval_flip_average, loss=config.loss)

  # ----------------------------------------------------------------- Evals
  evals: list[PeriodicEval] = []
  if eval_data:
    evals.append((config.eval_every_steps, lambda state: evaluation.evaluate(
        eval_step, evaluation.params_to_evaluate(state), eval_data, mesh)))
  evals.extend(program.periodic_evals(run))

  # ------------------------------------------------------------------ Loop
  # With data.skip_corrupt, how many corrupt training records the loader
  # has replaced so far (each is also logged as it is skipped).
  def counters() -> dict[str, float]:
    return {"data/corrupt_skipped": parallel.sum_over_processes(
        train_data.iterator.num_corrupt_skipped)}

  log = metrics.TrainLogger(writer, total_steps, config.batch_size,
                            config.log_every_steps,
                            counters if config.data.skip_corrupt else None)
  logging.info("Training from step %d to %d.", start_step, total_steps)
  latest, step = {}, start_step
  if start_step >= total_steps:
    # The last checkpoint was saved but the run stopped before its results
    # were written: evaluate that checkpoint and finish the run now.
    logging.info("%s holds the last checkpoint (step %d) but no %s: "
                 "evaluating it.", workdir, start_step, results.RESULTS_FILE)
    for _, run_eval in evals:
      fresh = run_eval(state)
      latest.update(fresh)
      writer.write_scalars(start_step, fresh)
  # The guard owns SIGTERM/SIGINT for the loop only: afterwards Ctrl-C
  # interrupts as usual (in a notebook, say).
  with preemption.PreemptionGuard() as guard:
    for step in range(start_step + 1, total_steps + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        host_batch = next(train_data.iterator)
        state, step_metrics = train_step(
            state, parallel.to_global_batch(host_batch, mesh))
      if step == 1:
        writer.write_images(0, {"train_images": metrics.image_grid(
            host_batch["image"][:32])})
      last = step == total_steps
      stop = guard.should_stop(manager, step)
      # Flush (and check for a non-finite loss) before anything is saved.
      log(step, step_metrics, flush=last or stop or manager.should_save(step))

      # ------------------------------------------------------------ Checkpoint
      # Before the evals: an eval that fails loses no training.
      checkpoints.save(manager, step, state, train_data.iterator, description,
                       force=last or stop)
      for every_steps, run_eval in evals:
        if step % every_steps == 0 or last:
          fresh = run_eval(state)
          latest.update(fresh)
          writer.write_scalars(step, fresh)
      if stop:
        logging.info("Stopped at step %d after a preemption signal.", step)
        break
  manager.wait_until_finished()
  writer.flush()

  # --------------------------------------------------------------- Results
  if step == total_steps:
    if jax.process_index() == 0:
      results.write_results(workdir, step, latest)
    program.on_finish(run, latest)
  return latest
