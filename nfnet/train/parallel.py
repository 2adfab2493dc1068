"""Devices, meshes and global batches: the data-parallel plumbing both programs share.

One mesh axis, `data`. Parameters and optimizer state are replicated; each
process feeds its own slice of the global batch, which becomes one global
`jax.Array` sharded along `data`. The same code runs on one CPU, one GPU, a
multi-host slice, or several processes on one machine.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
from nfnet.errors import UserError

DATA_AXIS = "data"

# Environment variables that mean "this process is one of several": when any is
# set, `maybe_initialize_distributed` connects to the coordinator.
_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")


def maybe_initialize_distributed(enabled: bool | None = None,
                                 coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> None:
  """Starts JAX's distributed runtime when asked by flag or environment.

  On TPU pods and SLURM/Open MPI clusters `jax.distributed.initialize()` finds
  everything itself; elsewhere pass the coordinator address, process count and
  id (or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).
  """
  if enabled is None:
    enabled = any(os.environ.get(k) for k in _DISTRIBUTED_ENV)
  if not enabled:
    return
  env = os.environ
  coordinator_address = coordinator_address or env.get(
      "JAX_COORDINATOR_ADDRESS") or env.get("COORDINATOR_ADDRESS")
  if num_processes is None and env.get("JAX_NUM_PROCESSES"):
    num_processes = int(env["JAX_NUM_PROCESSES"])
  if process_id is None and env.get("JAX_PROCESS_ID"):
    process_id = int(env["JAX_PROCESS_ID"])
  # Cross-process collectives on CPU (tests, laptops) need gloo; accelerators
  # ignore this setting.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def make_data_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over all (or the first `num_devices`) global devices.

  `jax.make_mesh` orders the devices for the interconnect (a ring on TPU).
  Its axes default to Explicit sharding; the steps are written for Auto (the
  `Mesh` default), so that is asked for. It refuses multi-slice topologies,
  where one data axis over every slice's devices is still the right mesh for
  pure data parallelism: those get a plain `Mesh`.
  """
  devices = jax.devices()
  if num_devices is not None:
    devices = devices[:num_devices]
  if len({getattr(d, "slice_index", 0) for d in devices}) > 1:
    return Mesh(np.asarray(devices), (DATA_AXIS,))
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_divisible(global_batch_size: int, mesh: Mesh,
                          micro_batches: int = 1) -> None:
  """Refuses a batch the devices (and each device's `micro_batches`) cannot
  split evenly, with the numbers."""
  devices, processes = mesh.devices.size, jax.process_count()
  if global_batch_size % devices:
    raise UserError(
        f"batch_size={global_batch_size} is not divisible by the {devices} "
        f"devices of the mesh; use a multiple of {devices}.")
  if global_batch_size % processes:
    raise UserError(
        f"batch_size={global_batch_size} is not divisible by the {processes} "
        "processes.")
  if (not isinstance(micro_batches, int) or isinstance(micro_batches, bool)
      or micro_batches < 1):
    raise UserError(f"micro_batches must be a positive int, got {micro_batches!r}.")
  per_device = global_batch_size // devices
  if per_device % micro_batches:
    raise UserError(
        f"the per-device batch of {per_device} (batch_size={global_batch_size} "
        f"over {devices} devices) does not split into micro_batches="
        f"{micro_batches}; use a batch_size that is a multiple of "
        f"{devices * micro_batches}.")


def to_global_batch(host_batch: dict[str, np.ndarray], mesh: Mesh) -> Any:
  """This process's numpy batch -> global arrays sharded along `data`."""
  sharding = batch_sharded(mesh)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), host_batch)


def sum_over_processes(count: int) -> int:
  """A host-side count summed over all processes (a blocking collective:
  every process must call it at the same point)."""
  if jax.process_count() == 1:
    return int(count)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return int(np.sum(multihost_utils.process_allgather(np.int64(count))))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a host pytree (identical on every process) on every device."""
  return jax.device_put(tree, replicated(mesh))
