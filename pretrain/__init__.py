"""The pre-training program: `python -m pretrain.main --config ... --workdir ...`."""
