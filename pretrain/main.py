r"""Pre-train an NFNet on a large, many-label image corpus.

    python -m data.synthetic --out /tmp/synth
    python -m pretrain.main --config pretrain/configs/synthetic.py:data_dir=/tmp/synth \
        --workdir /tmp/nfnet_pretrain [--config.total_steps=500 ...]

The run itself is `nfnet.train.trainer.train` (mesh, input, model, restore,
steps, loop, evals, checkpoint). What pre-training adds: its configs (the
multi-label sigmoid loss of JFT-style corpora is `config.loss`) and the
few-shot linear probes of the pre-logit features on downstream sets, on their
own cadence. Re-running with the same workdir resumes at the saved step with
the same data order. SIGTERM saves a checkpoint and exits cleanly.
"""
from __future__ import annotations

from absl import logging

from data import fewshot as data_fewshot
from nfnet.errors import UserError
from nfnet.train import cli, trainer
from pretrain import fewshot


def fewshot_probes(run: trainer.RunContext) -> list[trainer.PeriodicEval]:
  """Linear probes of the pre-logit features on the config's downstream sets
  (raw weights), every `fewshot_every_steps` (default: with the evals)."""
  config = run.config
  batch_size, devices = (config.fewshot.batch_size or config.batch_size,
                         run.mesh.devices.size)
  if config.fewshot.datasets and batch_size % devices:
    raise UserError(
        f"the few-shot batch of {batch_size} (fewshot.batch_size, else "
        f"batch_size) does not split over the {devices} devices; set "
        "config.fewshot.batch_size to a multiple.")
  sets = data_fewshot.make_fewshot_sets(config, run.process_index,
                                        run.process_count)
  if not sets:
    return []
  feature_step = fewshot.make_feature_step(run.model, run.mesh)
  probes = lambda state: fewshot.run_probes(
      feature_step, state.params, sets, config.fewshot.shots,
      config.fewshot.heldout_per_class, run.mesh, config.fewshot.l2_regs,
      log=logging.info)
  return [(config.fewshot_every_steps or config.eval_every_steps, probes)]


PROGRAM = trainer.Program(name="pre-training", periodic_evals=fewshot_probes)


def train(config, workdir: str) -> dict[str, float]:
  """Runs (or resumes) one pre-training run; returns the final eval metrics."""
  return trainer.train(config, workdir, PROGRAM)


if __name__ == "__main__":
  cli.run_program(train)
