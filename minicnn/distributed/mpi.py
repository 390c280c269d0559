"""The job: which process this is, how many there are, and the collectives.

MPI through mpi4py for host arrays and numbers; NCCL (``cupy.cuda.nccl``) for
CuPy arrays, its communicator made on first use from an id that rank 0 draws
and MPI broadcasts. A collective blocks until every rank has called it, so all
ranks must call the same ones in the same order.

    allreduce:  every rank r holds x_r; afterwards every rank holds sum_r x_r
                (divided by p = size() when averaging)
    broadcast:  every rank holds the root's x
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from minicnn import backend
from minicnn.backend import Array

INSTALL_HELP = ('minicnn.distributed needs mpi4py and an MPI library: '
                'pip install "minicnn[distributed]" (mpi4py and MPICH from PyPI; no system MPI '
                'is needed), then start the script with mpiexec -n P python script.py')

_state: dict[str, Any] = {"comm": None, "local": None, "nccl": None}


def _mpi() -> Any:
    """mpi4py's MPI module (importing it initialises MPI), or the one clear ImportError."""
    try:
        from mpi4py import MPI  # noqa: PLC0415  (optional dependency)
    except (ImportError, RuntimeError, OSError) as exc:  # no mpi4py, or no libmpi under it
        raise ImportError(f"{INSTALL_HELP} ({type(exc).__name__}: {exc})") from exc
    return MPI


def init(communicator: Any = None) -> None:
    """Join the job: MPI's world (or ``communicator``, an mpi4py Intracomm). Calling
    it again is harmless; a different communicator replaces the first."""
    MPI = _mpi()
    world = MPI.COMM_WORLD if communicator is None else communicator
    if _state["comm"] is world:
        return
    if not isinstance(world, MPI.Intracomm):
        raise TypeError(f"distributed.init: communicator must be an mpi4py Intracomm, "
                        f"got {type(world).__name__}")
    # The ranks that share this machine (and its GPUs): local_rank picks the GPU.
    local = world.Split_type(MPI.COMM_TYPE_SHARED, key=world.Get_rank())
    _state.update(comm=world, local=local, nccl=None)


def is_initialized() -> bool:
    return _state["comm"] is not None


def require_init(what: str) -> Any:
    """The communicator, or a RuntimeError saying ``what`` needs ``init()`` first."""
    if _state["comm"] is None:
        raise RuntimeError(f"{what}: call minicnn.distributed.init() first")
    return _state["comm"]


def comm() -> Any:
    """The mpi4py communicator of the job (for your own collectives)."""
    return require_init("distributed.comm")


def rank() -> int:
    """This process's number, 0 .. size() - 1; rank 0 prints and writes files."""
    return require_init("distributed.rank").Get_rank()


def size() -> int:
    """How many processes train together."""
    return require_init("distributed.size").Get_size()


def local_rank() -> int:
    """This process's number among those on the same machine: the GPU to use."""
    require_init("distributed.local_rank")
    return _state["local"].Get_rank()


def local_size() -> int:
    """How many processes of the job run on this machine."""
    require_init("distributed.local_size")
    return _state["local"].Get_size()


def set_seed(seed: int | None) -> None:
    """``minicnn.set_seed`` with a stream of its own for each rank: dropout masks and
    shuffles differ between ranks and repeat from run to run. (The initial weights
    differ too: ``BroadcastWeights`` replaces them with the root's.)"""
    if seed is None:
        backend.set_seed(None)
    else:
        # One int per (seed, rank), hashed by SeedSequence: unrelated streams per rank.
        backend.set_seed(int(np.random.SeedSequence((int(seed), rank())).generate_state(1)[0]))


# ------------------------------------------------------------------- collectives
def _host_view(buffer: Array) -> np.ndarray:
    """The buffer's memory as a NumPy array MPI can read and write (no copy)."""
    view = backend.to_host(buffer)
    if not view.flags.c_contiguous:
        raise ValueError("distributed: collectives need a contiguous buffer")
    return view


def _nccl() -> Any:
    """This job's NCCL communicator, made once: rank 0 draws its id, MPI broadcasts it."""
    if _state["nccl"] is None:
        from cupy.cuda import nccl  # noqa: PLC0415  (only with the cupy backend)
        world = comm()
        uid = world.bcast(nccl.get_unique_id() if world.Get_rank() == 0 else None, root=0)
        _state["nccl"] = nccl.NcclCommunicator(world.Get_size(), uid, world.Get_rank())
    return _state["nccl"]


def _nccl_type(dtype: Any) -> int:
    from cupy.cuda import nccl  # noqa: PLC0415
    types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
             "float16": nccl.NCCL_FLOAT16}
    if str(dtype) not in types:
        raise TypeError(f"distributed: NCCL averages float16/32/64 arrays, got {dtype}")
    return types[str(dtype)]


def allreduce_inplace(buffer: Array, average: bool = True) -> None:
    """Sum (or average) a contiguous 1-D buffer over the ranks, in place: MPI's
    Allreduce(IN_PLACE) for host arrays, NCCL's allReduce for CuPy arrays."""
    world = comm()
    if world.Get_size() == 1:
        return
    if type(buffer).__module__.startswith("cupy"):
        from cupy.cuda import nccl  # noqa: PLC0415
        stream = backend.get_array_module(buffer).cuda.get_current_stream()
        _nccl().allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size,
                          _nccl_type(buffer.dtype), nccl.NCCL_SUM, stream.ptr)
    else:
        world.Allreduce(_mpi().IN_PLACE, _host_view(buffer), op=_mpi().SUM)
    if average:
        buffer /= world.Get_size()


def broadcast_inplace(buffer: Array, root: int = 0) -> None:
    """Give every rank the root's values of a contiguous host buffer, in place."""
    world = comm()
    if world.Get_size() > 1:
        world.Bcast(_host_view(buffer), root=root)


def check_root(root: Any, where: str) -> int:
    """A rank number of this job, else a ValueError naming ``where``."""
    n = size()
    if isinstance(root, bool) or not isinstance(root, numbers.Integral) or not 0 <= root < n:
        raise ValueError(f"{where}: root must be a rank from 0 to {n - 1}, got {root!r}")
    return int(root)


def allreduce(value: Any, average: bool = True) -> Any:
    """The average (or with ``average=False`` the sum) of ``value`` over the ranks:
    a float for a number, a new array (on the same device) for an array."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        buffer = np.array([value], dtype=np.float64)
        allreduce_inplace(buffer, average)
        return float(buffer[0])
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        raise TypeError(f"distributed.allreduce: expected a number or an array, got "
                        f"{type(value).__name__}")
    xp = backend.get_array_module(value)
    buffer = xp.ascontiguousarray(value).reshape(-1).copy()
    allreduce_inplace(buffer, average)
    return buffer.reshape(value.shape)


def average_logs(logs: dict[str, float]) -> dict[str, float]:
    """``fit``'s epoch logs averaged over the ranks: every rank then prints, records
    and acts on (EarlyStopping, ReduceLROnPlateau, checkpoints) the same numbers.
    With equal shards the average of the ranks' means is the mean over all data.
    Every rank must hold the same keys: they are checked first."""
    keys = sorted(logs)
    everyone = comm().allgather(keys)
    if any(k != keys for k in everyone):
        raise RuntimeError(f"distributed.average_logs: the ranks logged different metrics: "
                           f"{everyone}")
    buffer = np.array([float(logs[k]) for k in keys], dtype=np.float64)
    allreduce_inplace(buffer)
    return {**logs, **{k: float(v) for k, v in zip(keys, buffer)}}
