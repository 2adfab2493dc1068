"""The training loop both programs run: step, log, evaluate, checkpoint.

    for each step: next host batch -> global batch -> train_step
                   log (flushed, and checked for NaN, before any save)
                   evaluate every `eval_every_steps` and at the end
                   save every `checkpoint_every_steps`, at the end, or when
                   a preemption signal arrives (then stop cleanly)

It takes everything it needs as arguments; what differs between pre-training
and fine-tuning lives in the config and in each program's setup.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
from absl import logging
from jax.sharding import Mesh

from nfnet import builders, checkpoints, parallel, reporting


def train_loop(*, config, state, train_step: Callable, data_iterator,
               evaluate: Callable[[Any], dict] | None, mesh: Mesh, manager,
               writer, total_steps: int, run_description: dict,
               workdir: str,
               periodic_evals: Sequence[tuple[int, Callable[[Any], dict]]] = (),
               ) -> dict[str, float]:
  """Trains from `state.step` to `total_steps`; returns the last eval metrics.

  `periodic_evals` are further (every_steps, fn(state) -> metrics) pairs
  (e.g. the few-shot probes), run on their own cadence and at the end; their
  latest values are logged, returned and kept in results.json too.
  """
  start_step = int(state.step)
  log = reporting.TrainLogger(writer, total_steps, config.batch_size,
                              config.log_every_steps)
  guard = builders.PreemptionGuard()
  logging.info("Training from step %d to %d.", start_step, total_steps)
  eval_metrics, periodic_metrics, step = {}, {}, start_step
  for step in range(start_step + 1, total_steps + 1):
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      host_batch = next(data_iterator)
      state, metrics = train_step(state, parallel.to_global_batch(host_batch, mesh))
    if step == 1:
      writer.write_images(0, {"train_images": builders.image_grid(
          host_batch["image"][:32])})
    last = step == total_steps
    stop = guard.should_stop(manager, step)
    # Flush (and check for a non-finite loss) before anything is saved.
    log(step, metrics, flush=last or stop or manager.should_save(step))
    if evaluate and (step % config.eval_every_steps == 0 or last):
      eval_metrics = evaluate(state)
      writer.write_scalars(step, eval_metrics)
    for every_steps, periodic_eval in periodic_evals:
      if step % every_steps == 0 or last:
        periodic_metrics.update(periodic_eval(state))
        writer.write_scalars(step, periodic_metrics)
    checkpoints.save(manager, step, state, data_iterator, run_description,
                     force=last or stop)
    if stop:
      logging.info("Stopped at step %d after a preemption signal.", step)
      break
  manager.wait_until_finished()
  writer.flush()
  eval_metrics = {**eval_metrics, **periodic_metrics}
  if step == total_steps:
    builders.write_results(workdir, step, eval_metrics)
  return eval_metrics
