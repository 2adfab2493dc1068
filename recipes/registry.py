"""The recipes as data: each one a list of stages over the programs' configs.

A stage names its program, its config file with `:args`, which of the
recipe's inputs feed its `--config.data.*` and which earlier stage it starts
from. `{variant}`-style fields are filled from the recipe's options when it
runs (`recipes/run.py`); a config argument whose value comes out empty is
left out, so the config's default holds.
"""
from __future__ import annotations

import dataclasses

# Which inputs a stage reads (`Stage.data`): the transfer recipes' two corpora,
# and a user's own dataset.
PRETRAIN_DATA, IMAGENET, USER_DATA = "pretrain", "imagenet", "dataset"


@dataclasses.dataclass(frozen=True)
class Stage:
  """One program run of a recipe, in WORKDIR/<name>."""

  name: str
  program: str                             # "pretrain" or "finetune"
  config: str                              # repository-relative config file
  config_args: tuple[tuple[str, str], ...] = ()   # its `:k=v,...`, templated
  data: str = ""                           # PRETRAIN_DATA, IMAGENET, USER_DATA
  starts_from: str = ""                    # a stage whose finished run is init_from
  paper: str = ""                          # the paper's top-1, for the table


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A recipe: its help text, its stages and the options it takes."""

  about: str                               # the head of --help
  stages: tuple[Stage, ...]
  workdir: str                             # default WORKDIR, templated
  inputs: str                              # "transfer", "imagenet" or "dataset"
  variant: str = ""                        # default variant ("" = the config's)
  # --variant's allowed values -> the paper's top-1 (fills `{paper}`); None
  # when the recipe takes no --variant or any variant.
  variants: dict[str, str] | None = None
  variant_option: bool = False             # takes --variant / $VARIANT
  epochs_option: bool = False              # takes --epochs / $EPOCHS (pre-training)
  size_options: bool = False               # takes --res, --steps, --batch


def transfer_stages(variant_args: tuple[tuple[str, str], ...],
                    pretrain_config: str, papers: dict[int, str],
                    pretrain_args: tuple[tuple[str, str], ...] = ()
                    ) -> tuple[Stage, ...]:
  """Pre-training, then ImageNet fine-tunes at 224, 320 and 384 px from it."""
  stages = [Stage("pretrain", "pretrain", pretrain_config,
                  variant_args + pretrain_args, data=PRETRAIN_DATA)]
  for res in (224, 320, 384):
    stages.append(Stage(f"finetune_{res}", "finetune",
                        "finetune/configs/imagenet.py",
                        variant_args + (("res", str(res)),), data=IMAGENET,
                        starts_from="pretrain", paper=papers.get(res, "")))
  return tuple(stages)


VARIANT_ARG = (("variant", "{variant}"),)

JFT_F4PLUS = Recipe(
    about="""\
NFNet-F4+ pre-trained on JFT-style shards, then fine-tuned on ImageNet at
224, 320 and 384 px, then a results table: the paper's 89.2% top-1 recipe
(appendix A.5; docs/reference.md section 4).

Usage: recipes/jft_f4plus.sh [--dry-run] --pretrain-data DIR|SOURCE
           --imagenet TFDS_DIR [options] [-- ARGS for every stage]

Stages (each in WORKDIR/<stage>; the fine-tunes start from WORKDIR/pretrain):
  pretrain       pretrain/configs/jft.py:variant=F4+  224 px, batch 4096,
                 lr 1.6, wd 1e-6, no EMA, no SAM, 20 epochs of 300M images
  finetune_224   finetune/configs/imagenet.py:variant=F4+,res=224  batch 2048,
  finetune_320   15,000 steps (5,000 warm-up), lr 0.1, SAM 0.05, wd 1e-5,
  finetune_384   dropout 0.25, stochastic depth 0.1, EMA 0.9999
Expected: 89.2% ImageNet top-1 at the best of the three resolutions.""",
    stages=transfer_stages(VARIANT_ARG, "pretrain/configs/jft.py",
                           dict.fromkeys((224, 320, 384), "89.2 (best res)")),
    workdir="runs/jft_f4plus", inputs="transfer", variant="F4+")

NF_RESNET50 = Recipe(
    about="""\
NF-ResNet-50 pre-trained on JFT-style shards, then fine-tuned on ImageNet at
224, 320 and 384 px, then a results table: the paper's Table 4 transfer
baseline (appendix A.5; docs/reference.md section 4).

Usage: recipes/nf_resnet50.sh [--dry-run] --pretrain-data DIR|SOURCE
           --imagenet TFDS_DIR [options] [-- ARGS for every stage]

Stages (each in WORKDIR/<stage>; the fine-tunes start from WORKDIR/pretrain):
  pretrain       pretrain/configs/jft.py:variant=NF-ResNet-50  224 px, batch
                 1024, lr 0.4 (not batch-scaled), 5,000 warm-up steps,
                 wd 1e-5, no EMA, 10 epochs of 300M images
  finetune_224   finetune/configs/imagenet.py:variant=NF-ResNet-50,res=224
  finetune_320   batch 2048, 15,000 steps (5,000 warm-up), lr 0.1, no weight
  finetune_384   decay, no dropout, no stochastic depth, no SAM, EMA 0.9999
Expected (paper, Table 4): 79.5 / 80.9 / 81.1% top-1 at 224 / 320 / 384.""",
    stages=transfer_stages(VARIANT_ARG, "pretrain/configs/jft.py",
                           {224: "79.5", 320: "80.9", 384: "81.1"}),
    workdir="runs/nf_resnet50", inputs="transfer", variant="NF-ResNet-50")

IMAGENET21K_TO_IMAGENET = Recipe(
    about="""\
An NFNet (default F4+) pre-trained on ImageNet-21k, the public stand-in for
JFT-300M, then fine-tuned on ImageNet at 224, 320 and 384 px, then a
results table.

Usage: recipes/imagenet21k_to_imagenet.sh [--dry-run]
           --pretrain-data DIR|SOURCE --imagenet TFDS_DIR [options]

Stages (each in WORKDIR/<stage>; the fine-tunes start from WORKDIR/pretrain):
  pretrain       pretrain/configs/imagenet21k.py:variant=F4+  the JFT recipe
                 (224 px, batch 4096, lr 1.6, wd 1e-6, no EMA) with softmax
                 loss, 90 epochs of the 13.15M-image winter21 release
  finetune_224   finetune/configs/imagenet.py:variant=F4+,res=224  batch 2048,
  finetune_320   15,000 steps (5,000 warm-up), lr 0.1, SAM 0.05, wd 1e-5,
  finetune_384   dropout 0.25, stochastic depth 0.1, EMA 0.9999
Expected: better than training the same model on ImageNet from scratch; the
paper has no ImageNet-21k numbers for NFNets (its 89.2% uses JFT-300M).

Recipe options (flag, or environment variable):
  --variant NAME          VARIANT  (default F4+; e.g. F0+ on smaller budgets)
  --epochs N              EPOCHS   pre-training length (default: the
                          config's 90)""",
    stages=transfer_stages(VARIANT_ARG, "pretrain/configs/imagenet21k.py", {},
                           pretrain_args=(("epochs", "{epochs}"),)),
    workdir="runs/imagenet21k_{variant}", inputs="transfer", variant="F4+",
    variant_option=True, epochs_option=True)

IMAGENET_FROM_SCRATCH = Recipe(
    about="""\
NFNet-F0..F6 trained on ImageNet from scratch: the paper's main result
(section 6.1, appendix A.1; Table 3), then a results table.

Usage: recipes/imagenet_from_scratch.sh [--dry-run] --variant F0..F6
           --imagenet TFDS_DIR [options] [-- ARGS for the stage]

One stage, train, in WORKDIR/train (python -m pretrain.main with
pretrain/configs/imagenet.py:variant=V):
  batch 4096, 360 epochs (112,602 steps), SGD-Nesterov 0.9 + AGC 0.01,
  lr 0.1 x 4096 / 256 = 1.6 with 5 warm-up epochs then cosine, wd 2e-5,
  EMA 0.99999, stochastic depth 0.25, the variant's dropout (F0 0.2 ..
  F6 0.5), train / test resolution (F0 192 / 256 .. F6 448 / 576) and
  RandAugment magnitude (F0 5, F1-F2 10, F3-F6 15; 4 layers), MixUp on half
  of each batch and CutMix on the other, then RandAugment, then label
  smoothing 0.1. Raw and EMA weights are evaluated at the test resolution.
Expected (paper, Table 3): 83.6 / 84.7 / 85.1 / 85.7 / 85.9 / 86.0 / 86.5%
  top-1 for F0 .. F6. F6's 86.5 is with SAM, whose ImageNet settings the
  paper does not give; this recipe trains without it: append
  `-- --config.sam_rho=0.05` (the fine-tune's rho) to train F6 with SAM.

Recipe options (flag, or environment variable):
  --variant NAME          VARIANT  F0..F6 (default F0)""",
    stages=(Stage("train", "pretrain", "pretrain/configs/imagenet.py",
                  VARIANT_ARG, data=IMAGENET, paper="{paper}"),),
    workdir="runs/imagenet_{variant}", inputs="imagenet", variant="F0",
    variants={"F0": "83.6", "F1": "84.7", "F2": "85.1", "F3": "85.7",
              "F4": "85.9", "F5": "86.0", "F6": "86.5"},
    variant_option=True)

DEEPMIND_FINETUNE = Recipe(
    about="""\
Fine-tune DeepMind's released NFNet-F0..F6 ImageNet weights (F*_haiku.npz)
on your own labelled image folders, then a results table.

Usage: recipes/deepmind_finetune.sh [--dry-run] --weights F3_haiku.npz
           --train DIR|SOURCE [--eval DIR|SOURCE] [options] [-- ARGS]

One stage, finetune, in WORKDIR/finetune:
  finetune/configs/dataset.py:variant=<from the file name>  the paper's
  fine-tune scaled to a small dataset: batch 512, 5,000 steps (10% warm-up),
  lr 0.1, SAM 0.05, wd 1e-5, dropout 0.25, stochastic depth 0.1, EMA 0.9999,
  the head re-initialised to your classes.
The variant comes from the file name (F0_haiku.npz .. F6_haiku.npz) or
--variant; the program's loader infers the variant from the weights' shapes
and stops with one clear message if it differs from --config.model.variant.
Expected: well above the same model trained from scratch on your data.

Recipe options:
  --variant NAME     F0..F6; needed only when the file name does not say
  --res N            training and eval resolution (default: the config's 256)
  --steps N          run length (default: the config's 5000)
  --batch N          global batch (default: the config's 512)""",
    stages=(Stage("finetune", "finetune", "finetune/configs/dataset.py",
                  (("variant", "{variant}"), ("res", "{res}"),
                   ("steps", "{steps}"), ("batch", "{batch}")),
                  data=USER_DATA),),
    workdir="runs/deepmind_{variant_or_f0}_finetune", inputs="dataset",
    variant_option=True, size_options=True)

RECIPES: dict[str, Recipe] = {
    "jft_f4plus": JFT_F4PLUS,
    "nf_resnet50": NF_RESNET50,
    "imagenet21k_to_imagenet": IMAGENET21K_TO_IMAGENET,
    "imagenet_from_scratch": IMAGENET_FROM_SCRATCH,
    "deepmind_finetune": DEEPMIND_FINETUNE,
}
