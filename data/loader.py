"""Training and evaluation input pipelines on grain's ``MapDataset`` API.

Training (:func:`make_train_loader`)::

    indices 0..N-1 -> seeded global shuffle -> repeat (reshuffled each epoch)
      -> per-example random map: read record, decode, Inception crop, flip,
         bicubic resize (data/transforms.py)
      -> this process's share: global positions p, p + P, p + 2P, ...
      -> batch (host batch x input_multiplier, drop remainder)
      -> batch transform (optional; MixUp/CutMix/RandAugment live there)
      -> iterator with multiprocess prefetch (num_workers; 0 = in-process)

Every step of it is a lazy, index-addressed ``MapDataset`` transformation, so
element ``k`` of the stream is a pure function of ``(seed, k)``. That gives:

- determinism: the same seed gives the same batches, with any ``num_workers``;
- exact resumption: the iterator's state is the next index; restoring it
  yields exactly the batches an unbroken run would have produced next;
- process independence: the per-example generator is keyed on the example's
  *global* stream position (the random map sits before the process split,
  and being lazy it only runs for this process's examples), so an example's
  crop does not depend on how many processes read; the P processes' step-k
  batches together are global positions ``[k*G, (k+1)*G)`` of one shuffled
  stream (``G`` = global batch), hence every epoch is read exactly once.

Host batch = ``global_batch_size // process_count``.

Batches are dicts of numpy arrays under the keys below: ``image`` uint8
``[B, S, S, 3]`` (programs normalise on device); ``label`` int32 ``[B]`` for a
single-label source, or ``targets`` float32 ``[B, num_classes]`` multi-hot for
a multi-label source; eval batches add ``mask`` bool ``[B]`` (False on padding
and on skipped corrupt records).

Batch-transform protocol (``batch_transform=`` of :func:`make_train_loader`)::

    class MyTransform:
      input_multiplier: int            # source examples per output example
      def __call__(self, batch: dict, rng: np.random.Generator) -> dict: ...

The loader batches ``input_multiplier * B`` examples and calls the transform
inside the grain pipeline (so in the worker processes), with a generator
seeded from ``(seed, process_index, batch_index)``: the output stays
deterministic and resumable. The transform must return ``B`` rows and may
replace ``label`` by soft ``targets`` float32 ``[B, C]`` (see data/augment.py).

Evaluation (:func:`make_eval_loader`) reads every example exactly once: the
split is padded to ``ceil(N / G) * G`` positions, each process reads
positions ``p, p + P, ...`` in order, every process runs the same number of
steps (``loader.num_steps``) and padding rows have ``mask == False``.

Checkpointing the training iterator inside an orbax checkpoint (one JSON file
per process, written by grain's handler)::

    import orbax.checkpoint as ocp
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=data.loader.save_args(iterator)))
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=data.loader.restore_args(iterator)))   # restores `iterator` in place

or directly: ``iterator.get_state()`` (a JSON-able dict) / ``iterator.set_state(state)``.

Corrupt records: by default the first one raises
:class:`data.sources.CorruptRecordError` naming its file and record index. With
``skip_corrupt=True`` training replaces it by the next good record of the
source, eval masks it out, and both count it: ``iterator.num_corrupt_skipped``
(kept across checkpoints) and a warning per record.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Iterator, Optional, Protocol, Union

import grain
import numpy as np

from data import decode
from data import sources as sources_lib
from data import transforms
from data.errors import DataError

IMAGE = "image"
LABEL = "label"
TARGETS = "targets"
MASK = "mask"
BATCH_KEYS = (IMAGE, LABEL, TARGETS, MASK)

# Per-example corrupt-record counts travel through the pipeline under this key
# and are removed by the iterator before a batch is handed out.
_NUM_CORRUPT = "_num_corrupt"
# After this many consecutive corrupt records training gives up.
MAX_CONSECUTIVE_CORRUPT = 100
# Stream tags folded into the seed so each random stage has its own stream.
_SHUFFLE_STREAM, _EXAMPLE_STREAM, _BATCH_STREAM = 1, 2, 3

SourceLike = Union[str, sources_lib.Source]


class BatchTransform(Protocol):
  """A batch-level transform run inside the pipeline (see the module docstring)."""

  input_multiplier: int

  def __call__(self, batch: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    ...


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
  """How the pipeline runs (not what it yields: batches do not depend on these).

  Attributes:
    num_workers: worker processes decoding batches (grain ``mp_prefetch``);
      0 runs everything in the calling process.
    read_threads: threads per process preparing batches (PIL and simplejpeg
      release the GIL, so 2 threads use 2 cores even without workers).
    prefetch_batches: batches buffered per process.
  """

  num_workers: int = 0
  read_threads: int = 2
  prefetch_batches: int = 2


def derive_seed(seed: int, *parts: int) -> int:
  """A 32-bit seed for one random stage, from the run seed and stage tags."""
  return int(np.random.SeedSequence([seed, *parts]).generate_state(1, np.uint32)[0])


def _open(source: SourceLike, source_options: Optional[dict]) -> sources_lib.Source:
  if isinstance(source, str):
    return sources_lib.open_source(source, **(source_options or {}))
  if source_options:
    raise DataError("source_options only apply when the source is given as a spec string.")
  return source


def _check_label_space(source: sources_lib.Source) -> int:
  if not source.num_classes:
    raise DataError(
        f"The number of classes of {source.spec} is unknown: pass num_classes=... in the "
        f"source options, or write dataset_info.json with `python -m data.inspect "
        f"'{source.spec}' --write-info`.")
  return int(source.num_classes)


def host_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise DataError(
        f"global_batch_size {global_batch_size} must be a positive multiple of the "
        f"process count {process_count}.")
  return global_batch_size // process_count


# -------------------------------------------------------------- per example


@dataclasses.dataclass(frozen=True)
class _ExampleReader:
  """Reads record ``i`` and turns its labels into a target. Picklable."""

  source: sources_lib.Source
  config: transforms.TransformConfig
  num_classes: int
  skip_corrupt: bool

  def target(self, record: sources_lib.Record, index: int) -> tuple[str, np.ndarray]:
    labels = record.labels
    if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
      raise sources_lib.CorruptRecordError(
          self.source.locate(index),
          f"label(s) {labels.tolist()} outside [0, {self.num_classes}) (is num_classes right?)")
    if self.source.multi_label:
      targets = np.zeros(self.num_classes, np.float32)
      targets[labels] = 1.0
      return TARGETS, targets
    if labels.size != 1:
      raise sources_lib.CorruptRecordError(
          self.source.locate(index),
          f"{labels.size} labels in a single-label source (pass multi_label=True if the "
          "data is multi-label)")
    return LABEL, np.int32(labels[0])

  def read(self, index: int, rng: Optional[np.random.Generator]) -> dict[str, Any]:
    """Decoded, transformed example; raises CorruptRecordError naming the record."""
    record = self.source[index]
    try:
      if rng is None:
        image = transforms.eval_image(record.image, self.config)
      else:
        image = transforms.train_image(record.image, rng, self.config)
    except decode.ImageDecodeError as e:
      raise sources_lib.CorruptRecordError(self.source.locate(index), str(e)) from None
    key, value = self.target(record, index)
    return {IMAGE: image, key: value}

  def warn_skip(self, error: sources_lib.CorruptRecordError) -> None:
    logging.warning("Skipping corrupt record %s: %s", error.location, error.reason)


@dataclasses.dataclass(frozen=True)
class _TrainExample:
  """grain random map: global stream position's source index -> training example."""

  reader: _ExampleReader

  def __call__(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
    num_records = len(self.reader.source)
    for attempt in range(MAX_CONSECUTIVE_CORRUPT):
      try:
        example = self.reader.read((int(index) + attempt) % num_records, rng)
        # One replaced record, however many corrupt ones the walk to the
        # next good one passed: the count is corrupt records per pass.
        example[_NUM_CORRUPT] = int(attempt > 0)
        return example
      except sources_lib.CorruptRecordError as e:
        if not self.reader.skip_corrupt:
          raise
        self.reader.warn_skip(e)
    raise RuntimeError(
        f"{MAX_CONSECUTIVE_CORRUPT} consecutive corrupt records in {self.reader.source.spec} "
        f"after record {index}; check it with `python -m data.inspect SPEC --check`.")


@dataclasses.dataclass(frozen=True)
class _EvalExample:
  """grain map: padded position -> eval example with a mask."""

  reader: _ExampleReader

  def padding(self) -> dict[str, Any]:
    size = self.reader.config.resolution
    example = {IMAGE: np.zeros((size, size, 3), np.uint8), MASK: np.bool_(False)}
    if self.reader.source.multi_label:
      example[TARGETS] = np.zeros(self.reader.num_classes, np.float32)
    else:
      example[LABEL] = np.int32(0)
    return example

  def __call__(self, position: int) -> dict[str, Any]:
    if position >= len(self.reader.source):
      return {**self.padding(), _NUM_CORRUPT: 0}
    try:
      example = self.reader.read(int(position), None)
    except sources_lib.CorruptRecordError as e:
      if not self.reader.skip_corrupt:
        raise
      self.reader.warn_skip(e)
      return {**self.padding(), _NUM_CORRUPT: 1}
    example[MASK] = np.bool_(True)
    example[_NUM_CORRUPT] = 0
    return example


def _stack(examples) -> dict[str, np.ndarray]:
  """grain batch_fn: stacks each key; sums the corrupt counts into one scalar."""
  batch = {key: np.stack([e[key] for e in examples])
           for key in examples[0] if key != _NUM_CORRUPT}
  batch[_NUM_CORRUPT] = np.int64(sum(e[_NUM_CORRUPT] for e in examples))
  return batch


@dataclasses.dataclass(frozen=True)
class _ApplyBatchTransform:
  """grain map_with_index over batches: runs the batch transform with a per-batch rng."""

  transform: BatchTransform
  seed: int
  process_index: int
  output_batch_size: int

  def __call__(self, batch_index: int, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, _BATCH_STREAM, self.process_index, int(batch_index)])
    num_corrupt = batch.pop(_NUM_CORRUPT)
    out = dict(self.transform(batch, rng))
    if len(out[IMAGE]) != self.output_batch_size:
      raise DataError(
          f"batch_transform returned {len(out[IMAGE])} images; expected "
          f"{self.output_batch_size} (input {len(batch[IMAGE])} / input_multiplier).")
    out[_NUM_CORRUPT] = num_corrupt
    return out


# ----------------------------------------------------------------- iterator


class LoaderIterator(grain.DatasetIterator):
  """The training iterator: grain's, minus internal keys, plus a corrupt-record count.

  ``get_state()`` / ``set_state()`` are JSON-able and restore the exact
  position; grain's orbax handler (:func:`save_args` / :func:`restore_args`)
  saves them per process.
  """

  def __init__(self, inner: grain.DatasetIterator):
    super().__init__(inner)
    self.num_corrupt_skipped = 0

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._parent)
    self.num_corrupt_skipped += int(batch.pop(_NUM_CORRUPT))
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"pipeline": self._parent.get_state(),
            "num_corrupt_skipped": self.num_corrupt_skipped}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["pipeline"])
    self.num_corrupt_skipped = int(state["num_corrupt_skipped"])


def save_args(iterator: LoaderIterator):
  """orbax ``CheckpointArgs`` saving ``iterator``'s state (grain's handler)."""
  return grain.checkpoint.CheckpointSave(iterator)


def restore_args(iterator: LoaderIterator):
  """orbax ``CheckpointArgs`` restoring into ``iterator`` in place (grain's handler)."""
  return grain.checkpoint.CheckpointRestore(iterator)


def _ensure_absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside ``absl.app.run`` use their defaults."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _to_iterator(dataset: grain.MapDataset, options: PipelineOptions) -> grain.DatasetIterator:
  iter_dataset = dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=options.read_threads, prefetch_buffer_size=options.prefetch_batches))
  if options.num_workers > 0:
    _ensure_absl_flags_parsed()
    iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=options.num_workers, per_worker_buffer_size=options.prefetch_batches))
  return iter(iter_dataset)


# ------------------------------------------------------------------ builders


def train_dataset(source: sources_lib.Source, *, host_batch: int, config: transforms.TransformConfig,
                  seed: int, process_index: int, process_count: int,
                  batch_transform: Optional[BatchTransform] = None, skip_corrupt: bool = False,
                  num_epochs: Optional[int] = None) -> grain.MapDataset:
  """The training pipeline as a grain ``MapDataset`` of batches (before prefetch)."""
  if not len(source):
    raise DataError(f"{source!r} holds no records: nothing to train on.")
  reader = _ExampleReader(source, config, _check_label_space(source), skip_corrupt)
  multiplier = int(getattr(batch_transform, "input_multiplier", 1))
  if multiplier < 1:
    raise DataError(f"batch_transform.input_multiplier must be >= 1, got {multiplier}.")
  dataset = (grain.MapDataset.range(len(source))
             .shuffle(seed=derive_seed(seed, _SHUFFLE_STREAM))
             .repeat(num_epochs)
             .random_map(_TrainExample(reader), seed=derive_seed(seed, _EXAMPLE_STREAM)))
  if num_epochs is not None:
    # Whole global batches only: the process split below would otherwise
    # leave an incomplete last batch to some processes and not others.
    global_inputs = host_batch * multiplier * process_count
    dataset = dataset[:len(dataset) // global_inputs * global_inputs]
  dataset = dataset[process_index::process_count]
  dataset = dataset.batch(host_batch * multiplier, drop_remainder=True, batch_fn=_stack)
  if batch_transform is not None:
    dataset = dataset.map_with_index(
        _ApplyBatchTransform(batch_transform, seed, process_index, host_batch))
  return dataset


def make_train_loader(source: SourceLike, *, global_batch_size: int, resolution: int, seed: int,
                      process_index: int = 0, process_count: int = 1, num_workers: int = 0,
                      transform_config: Optional[transforms.TransformConfig] = None,
                      batch_transform: Optional[BatchTransform] = None,
                      skip_corrupt: bool = False, num_epochs: Optional[int] = None,
                      read_threads: int = 2, prefetch_batches: int = 2,
                      source_options: Optional[dict] = None) -> LoaderIterator:
  """An endless (or ``num_epochs``-long) iterator of this process's training batches.

  Args:
    source: a spec string (data/sources.py) or an opened source.
    global_batch_size: examples per step over all processes.
    resolution: training resolution S (ignored when ``transform_config`` is given).
    seed: the run's data seed; batches are a pure function of it.
    process_index, process_count: this process's place (``jax.process_index()``,
      ``jax.process_count()``).
    num_workers: decoding processes (0 = in-process).
    transform_config: crop/flip/decode settings; default ``TransformConfig(resolution)``.
    batch_transform: optional batch-level transform (protocol above).
    skip_corrupt: skip and count corrupt records instead of raising.
    num_epochs: None repeats forever.
    read_threads, prefetch_batches: see :class:`PipelineOptions`.
    source_options: options for :func:`data.sources.open_source` when ``source`` is a spec.
  """
  source = _open(source, source_options)
  config = transform_config or transforms.TransformConfig(resolution)
  dataset = train_dataset(
      source, host_batch=host_batch_size(global_batch_size, process_count), config=config,
      seed=seed, process_index=process_index, process_count=process_count,
      batch_transform=batch_transform, skip_corrupt=skip_corrupt, num_epochs=num_epochs)
  return LoaderIterator(_to_iterator(
      dataset, PipelineOptions(num_workers, read_threads, prefetch_batches)))


class EvalLoader:
  """Iterable over one pass of an eval split; each ``iter()`` starts a fresh pass.

  Attributes:
    num_steps: batches every process yields (the same on all processes).
    num_examples: real examples in the split (rows with ``mask`` True over all
      processes, unless corrupt records were skipped).
    num_corrupt_skipped: corrupt records masked out in the latest pass.
  """

  def __init__(self, dataset: grain.MapDataset, num_steps: int, num_examples: int,
               options: PipelineOptions):
    self._dataset = dataset
    self._options = options
    self.num_steps = num_steps
    self.num_examples = num_examples
    self.num_corrupt_skipped = 0

  def __len__(self) -> int:
    return self.num_steps

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    self.num_corrupt_skipped = 0
    iterator = _to_iterator(self._dataset, self._options)
    try:
      for batch in iterator:
        self.num_corrupt_skipped += int(batch.pop(_NUM_CORRUPT))
        yield batch
    finally:
      iterator.close()


def eval_dataset(source: sources_lib.Source, *, global_batch_size: int,
                 config: transforms.TransformConfig, process_index: int, process_count: int,
                 skip_corrupt: bool = False) -> tuple[grain.MapDataset, int]:
  """The eval pipeline as a ``MapDataset`` of batches, and its number of steps."""
  host_batch = host_batch_size(global_batch_size, process_count)
  reader = _ExampleReader(source, config, _check_label_space(source), skip_corrupt)
  num_steps = math.ceil(len(source) / global_batch_size)
  dataset = grain.MapDataset.range(num_steps * global_batch_size)
  dataset = dataset[process_index::process_count].map(_EvalExample(reader))
  return dataset.batch(host_batch, batch_fn=_stack), num_steps


def make_eval_loader(source: SourceLike, *, global_batch_size: int, resolution: int,
                     process_index: int = 0, process_count: int = 1, num_workers: int = 0,
                     transform_config: Optional[transforms.TransformConfig] = None,
                     skip_corrupt: bool = False, read_threads: int = 2,
                     prefetch_batches: int = 2,
                     source_options: Optional[dict] = None) -> EvalLoader:
  """One exact pass over ``source`` through the eval transform (the whole image
  resized, the centre S x S crop: :func:`data.transforms.eval_image`); the last
  batch padded and masked. ``transform_config`` sets the crop fraction; its
  resolution is the one used."""
  source = _open(source, source_options)
  config = transform_config or transforms.TransformConfig(resolution)
  dataset, num_steps = eval_dataset(
      source, global_batch_size=global_batch_size, config=config, process_index=process_index,
      process_count=process_count, skip_corrupt=skip_corrupt)
  return EvalLoader(dataset, num_steps, len(source),
                    PipelineOptions(num_workers, read_threads, prefetch_batches))
