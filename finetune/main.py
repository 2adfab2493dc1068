r"""Fine-tune a pre-trained NFNet on a labelled image set, with SAM and EMA.

    python -m finetune.main --config finetune/configs/imagenet.py:res=384 \
        --workdir /ckpt/f4plus_ft384 --config.init_from=/ckpt/f4plus_pretrain

`init_from` takes a pre-training workdir (or one of its checkpoints), a
`python -m nfnet.convert` output, DeepMind's `*_haiku.npz` or a timm
`dm_nfnet_*` state dict. The head is re-initialised when the class count
differs (or with --config.reinit_head); any other mismatch stops the run with
one message listing every parameter. A checkpoint in the workdir always wins
over init_from (resume). Raw and EMA weights are both evaluated, at
`eval_resolution` when the config sets one.

The run itself is `nfnet.train.trainer.train`, as for pre-training; the
fine-tune recipe (SAM, EMA, head surgery, the eval resolution) is its config.
"""
from __future__ import annotations

from absl import logging

from nfnet.train import cli, results, trainer


def warn_without_init_from(run: trainer.RunContext) -> None:
  if not run.config.init_from:
    logging.warning("config.init_from is empty: fine-tuning from scratch "
                    "(a control run).")


def log_final_evaluation(run: trainer.RunContext, metrics: dict) -> None:
  logging.info("Final evaluation at %d px: %s",
               run.config.eval_resolution or run.config.resolution,
               results.format_metrics(metrics))


PROGRAM = trainer.Program(name="fine-tuning", on_start=warn_without_init_from,
                          on_finish=log_final_evaluation)


def train(config, workdir: str) -> dict[str, float]:
  """Runs (or resumes) one fine-tuning run; returns the final eval metrics."""
  return trainer.train(config, workdir, PROGRAM)


if __name__ == "__main__":
  cli.run_program(train)
