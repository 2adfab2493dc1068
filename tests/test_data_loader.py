"""The grain train/eval loaders: determinism, resumption, process sharding, eval padding,
multi-label targets, corrupt records and the batch-transform slot."""

import os

import numpy as np
import pytest
import simplejpeg

from data import augment
from data import loader
from data import sources
from data import synthetic
from data import tf_example

RES = 16


def _jpeg(i: int) -> bytes:
  pixels = np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8)
  return simplejpeg.encode_jpeg(pixels, quality=85)


def _write(directory, num_records, labels_of=lambda i: [i], image_of=_jpeg, shards=2):
  """ArrayRecord shards where record i has labels ``labels_of(i)``: labels identify records."""
  os.makedirs(directory, exist_ok=True)
  bounds = np.linspace(0, num_records, shards + 1).astype(int)
  paths = []
  for shard in range(shards):
    path = os.path.join(directory, f"part-{shard}.array_record")
    writer = synthetic.open_writer(path, "arrayrecord")
    for i in range(bounds[shard], bounds[shard + 1]):
      writer.write(tf_example.serialize_example(
          {"image/encoded": image_of(i), "image/class/label": np.asarray(labels_of(i), np.int64)}))
    writer.close()
    paths.append(path)
  return paths


@pytest.fixture(scope="module")
def indexed_source(tmp_path_factory):
  """24 records; record i has the single label i (so labels name records)."""
  directory = tmp_path_factory.mktemp("indexed")
  _write(str(directory), 24)
  return sources.open_source(f"arrayrecord:{directory}/*.array_record", num_classes=24)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def _train(source, **kwargs):
  options = dict(global_batch_size=6, resolution=RES, seed=0)
  options.update(kwargs)
  return loader.make_train_loader(source, **options)


def test_batches_have_the_documented_keys_shapes_and_dtypes(indexed_source):
  batch = next(_train(indexed_source))
  assert set(batch) == {loader.IMAGE, loader.LABEL}
  assert batch["image"].shape == (6, RES, RES, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (6,) and batch["label"].dtype == np.int32


def test_seeded_determinism(indexed_source):
  first = _take(_train(indexed_source, seed=3), 5)
  _assert_same_batches(first, _take(_train(indexed_source, seed=3), 5))
  other = _take(_train(indexed_source, seed=4), 5)
  assert not all(np.array_equal(a["label"], b["label"]) for a, b in zip(first, other))
  # The first epoch (4 steps of 6) is a permutation of the 24 records, not the identity.
  labels = np.concatenate([b["label"] for b in first[:4]])
  assert sorted(labels) == list(range(24)) and labels.tolist() != list(range(24))


def test_resumed_stream_equals_unbroken_stream(indexed_source):
  unbroken = _take(_train(indexed_source), 11)
  iterator = _train(indexed_source)
  _take(iterator, 6)
  state = iterator.get_state()
  resumed = _train(indexed_source)
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 5), unbroken[6:])


def test_workers_do_not_change_batches_and_resume_across_workers(indexed_source):
  in_process = _take(_train(indexed_source), 6)
  iterator = _train(indexed_source, num_workers=2)
  try:
    _assert_same_batches(_take(iterator, 3), in_process[:3])
    state = iterator.get_state()
  finally:
    iterator.close()
  resumed = _train(indexed_source, num_workers=2)
  try:
    resumed.set_state(state)
    _assert_same_batches(_take(resumed, 3), in_process[3:])
  finally:
    resumed.close()


def test_iterator_state_round_trips_through_orbax(indexed_source, tmp_path):
  import orbax.checkpoint as ocp
  unbroken = _take(_train(indexed_source), 7)
  iterator = _train(indexed_source)
  _take(iterator, 4)
  with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
    manager.save(4, args=ocp.args.Composite(data=loader.save_args(iterator)))
    manager.wait_until_finished()
  restored = _train(indexed_source)
  with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
    manager.restore(4, args=ocp.args.Composite(data=loader.restore_args(restored)))
  _assert_same_batches(_take(restored, 3), unbroken[4:])


@pytest.mark.parametrize("process_count", [2, 3])
def test_process_shards_partition_every_epoch_exactly_once(indexed_source, process_count):
  global_batch = 6
  steps_per_epoch = 24 // global_batch
  per_process = [
      _take(_train(indexed_source, global_batch_size=global_batch, process_index=p,
                   process_count=process_count), 2 * steps_per_epoch)
      for p in range(process_count)]
  for batches in per_process:
    assert batches[0]["image"].shape[0] == global_batch // process_count
  for epoch in range(2):
    steps = range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
    labels = np.concatenate([per_process[p][s]["label"]
                             for s in steps for p in range(process_count)])
    assert sorted(labels.tolist()) == list(range(24))
  # Every step's global batch is the same set of examples as with one process.
  single = _take(_train(indexed_source, global_batch_size=global_batch), steps_per_epoch)
  for step in range(steps_per_epoch):
    together = np.concatenate([per_process[p][step]["label"] for p in range(process_count)])
    assert sorted(together) == sorted(single[step]["label"])


@pytest.mark.parametrize("num_records, global_batch, process_count",
                         [(7, 4, 2), (22, 6, 3)])
def test_a_finite_run_gives_every_process_the_same_batches(
    tmp_path, num_records, global_batch, process_count):
  # Split by process before batching, the incomplete last global batch made a
  # whole host batch on some processes only (7 records, batch 4, 2 processes:
  # 2 batches on one, 1 on the other).
  _write(str(tmp_path), num_records)
  source = sources.open_source(f"arrayrecord:{tmp_path}/*.array_record",
                               num_classes=num_records)
  per_process = [list(_train(source, global_batch_size=global_batch,
                             num_epochs=1, process_index=p,
                             process_count=process_count))
                 for p in range(process_count)]
  whole_batches = num_records // global_batch
  assert [len(b) for b in per_process] == [whole_batches] * process_count
  single = list(_train(source, global_batch_size=global_batch, num_epochs=1))
  assert len(single) == whole_batches
  for step in range(whole_batches):
    together = np.concatenate([per_process[p][step]["label"]
                               for p in range(process_count)])
    assert sorted(together) == sorted(single[step]["label"])


def test_example_augmentation_does_not_depend_on_process_count(indexed_source):
  single = next(_train(indexed_source))
  by_label = {int(l): img for l, img in zip(single["label"], single["image"])}
  for p in range(2):
    batch = next(_train(indexed_source, process_index=p, process_count=2))
    for label, image in zip(batch["label"], batch["image"]):
      np.testing.assert_array_equal(image, by_label[int(label)])


def test_eval_reads_every_example_once_with_padding_and_masks(tmp_path):
  _write(str(tmp_path), 10)
  source = sources.open_source(f"arrayrecord:{tmp_path}/*", num_classes=10)
  seen = []
  for p in range(2):
    eval_loader = loader.make_eval_loader(source, global_batch_size=4, resolution=RES,
                                          process_index=p, process_count=2)
    batches = list(eval_loader)
    assert len(batches) == eval_loader.num_steps == 3  # ceil(10 / 4), on both processes
    for batch in batches:
      assert batch["image"].shape == (2, RES, RES, 3) and batch["mask"].dtype == bool
      seen.extend(batch["label"][batch["mask"]].tolist())
      assert not batch["image"][~batch["mask"]].any()  # padding rows are blank
    assert sum(int(b["mask"].sum()) for b in batches) == 5
  assert sorted(seen) == list(range(10))
  # A second pass over the same loader gives the same batches.
  again = loader.make_eval_loader(source, global_batch_size=4, resolution=RES)
  _assert_same_batches(list(again), list(again))


def test_multi_label_sources_yield_multi_hot_targets(tmp_path):
  labels_of = lambda i: sorted({i % 5, (i * 3) % 5, 4}) if i % 4 else []
  _write(str(tmp_path), 12, labels_of=labels_of)
  source = sources.open_source(f"arrayrecord:{tmp_path}/*", num_classes=5, multi_label=True)
  eval_batch = next(iter(loader.make_eval_loader(source, global_batch_size=12, resolution=RES)))
  assert set(eval_batch) == {"image", "targets", "mask"}
  assert eval_batch["targets"].dtype == np.float32 and eval_batch["targets"].shape == (12, 5)
  for i in range(12):
    expected = np.zeros(5, np.float32)
    expected[labels_of(i)] = 1
    np.testing.assert_array_equal(eval_batch["targets"][i], expected)
  train_batch = next(_train(source, global_batch_size=4))
  assert set(train_batch) == {"image", "targets"} and train_batch["targets"].shape == (4, 5)


@pytest.fixture
def corrupt_source(tmp_path):
  """12 records; record 7 (file part-1, index 1) holds bytes that are not an image."""
  image_of = lambda i: b"\xff\xd8\xff this is no jpeg" if i == 7 else _jpeg(i)
  paths = _write(str(tmp_path), 12, image_of=image_of)
  source = sources.open_source(f"arrayrecord:{tmp_path}/*", num_classes=12)
  return source, paths[1]


def test_corrupt_record_error_names_file_and_index(corrupt_source):
  source, path = corrupt_source
  iterator = _train(source, global_batch_size=4)
  with pytest.raises(sources.CorruptRecordError, match=rf"{path} \[record 1\]"):
    _take(iterator, 3)  # one epoch reaches record 7
  with pytest.raises(sources.CorruptRecordError, match=r"record 1\]"):
    list(loader.make_eval_loader(source, global_batch_size=4, resolution=RES))


def test_skip_corrupt_skips_and_counts(corrupt_source):
  source, _ = corrupt_source
  iterator = _train(source, global_batch_size=4, skip_corrupt=True)
  epochs = [np.concatenate([b["label"] for b in _take(iterator, 3)]) for _ in range(2)]
  for labels in epochs:
    assert 7 not in labels and len(labels) == 12  # replaced, batches stay full
  assert iterator.num_corrupt_skipped == 2  # once per epoch
  state = iterator.get_state()
  assert state["num_corrupt_skipped"] == 2
  eval_loader = loader.make_eval_loader(source, global_batch_size=4, resolution=RES,
                                        skip_corrupt=True)
  batches = list(eval_loader)
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  assert sorted(labels) == [i for i in range(12) if i != 7]
  assert eval_loader.num_corrupt_skipped == 1

  # An evaluation pass reports what it left out beside what it scored.
  from nfnet.train import evaluation, parallel  # pylint: disable=import-outside-toplevel
  count_real = lambda params, batch: {"count": batch["mask"].sum()}
  metrics = evaluation.evaluate(count_real, {"eval": None}, eval_loader,
                                parallel.make_data_mesh())
  assert (metrics["eval/examples"], metrics["eval/corrupt_skipped"]) == (11, 1)


class _PairMean:
  """Averages example i with example B + i and records the rng draw: a test transform."""

  input_multiplier = 2

  def __call__(self, batch, rng):
    half = len(batch["image"]) // 2
    images = batch["image"].astype(np.float32)
    return {"image": ((images[:half] + images[half:]) / 2).astype(np.uint8),
            "label": batch["label"][:half],
            "draw": np.full(half, rng.random(), np.float32)}


def test_batch_transform_gets_multiplied_batches_and_a_resumable_rng(indexed_source):
  iterator = _train(indexed_source, batch_transform=_PairMean())
  batches = _take(iterator, 4)
  assert batches[0]["image"].shape == (6, RES, RES, 3)
  # The loader fed 12 examples per step: one epoch of 24 is used in 2 steps.
  draws = [float(b["draw"][0]) for b in batches]
  assert len(set(draws)) == 4  # a fresh generator state per batch
  _assert_same_batches(batches, _take(_train(indexed_source, batch_transform=_PairMean()), 4))
  resumed = _train(indexed_source, batch_transform=_PairMean())
  iterator = _train(indexed_source, batch_transform=_PairMean())
  _take(iterator, 2)
  resumed.set_state(iterator.get_state())
  _assert_same_batches(_take(resumed, 2), batches[2:])
  # Different processes draw differently for the same batch index.
  other = next(_train(indexed_source, batch_transform=_PairMean(), process_index=1,
                      process_count=2))
  assert float(other["draw"][0]) != draws[0]


def test_batch_transform_returning_wrong_size_is_refused(indexed_source):
  class Broken:
    input_multiplier = 2

    def __call__(self, batch, rng):
      return batch  # forgot to halve
  with pytest.raises(ValueError, match="returned 12 images; expected 6"):
    next(_train(indexed_source, batch_transform=Broken()))


def test_mixing_augmentation_plugs_into_the_slot(indexed_source):
  transform = augment.make_batch_augment(augment.imagenet_recipe("F0"), num_classes=24)
  batch = next(_train(indexed_source, batch_transform=transform))
  assert set(batch) == {"image", "targets"}
  assert batch["image"].shape == (6, RES, RES, 3) and batch["targets"].shape == (6, 24)
  np.testing.assert_allclose(batch["targets"].sum(axis=1), 1.0, rtol=1e-5)


def test_configuration_errors_are_clear(indexed_source, tmp_path):
  with pytest.raises(ValueError, match="multiple of the process count 4"):
    _train(indexed_source, global_batch_size=6, process_count=4)
  _write(str(tmp_path), 3)
  unknown = sources.open_source(f"arrayrecord:{tmp_path}/*")
  with pytest.raises(ValueError, match="number of classes .* unknown.*--write-info"):
    _train(unknown)
  os.makedirs(tmp_path / "empty")
  (tmp_path / "empty" / "train-0.tfrecord").write_bytes(b"")
  with pytest.raises(ValueError, match="holds no records"):
    _train(sources.open_source(f"tfrecord:{tmp_path}/empty/*", num_classes=2))
  multi = sources.open_source(f"arrayrecord:{tmp_path}/*", num_classes=2)
  with pytest.raises(sources.CorruptRecordError, match=r"label\(s\) \[2\] outside \[0, 2\)"):
    list(loader.make_eval_loader(multi, global_batch_size=3, resolution=RES))
