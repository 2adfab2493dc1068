"""The fine-tuning program: `python -m finetune.main --config ... --workdir ...`."""
