"""Input data for the NFNet toolkit: sources, transforms, loaders and dataset tools.

Kept light: importing ``data`` imports nothing heavy; import the submodules.

- ``data.sources``    ``open_source("arrayrecord:GLOB" | "tfrecord:GLOB" |
                      "tfds:NAME[:VERSION]/SPLIT" | "folder:PATH")``
- ``data.loader``     ``make_train_loader`` / ``make_eval_loader`` (grain pipelines)
- ``data.transforms`` Inception crop / flip / bicubic resize; eval resize + centre crop
- ``data.augment``, ``data.mixing``, ``data.randaugment``  batch-level augmentation
- command lines: ``python -m data.synthetic``, ``data.inspect``, ``data.convert``,
  ``data.index``

This package never imports ``nfnet/``.
"""
