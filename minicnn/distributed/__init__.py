"""Data-parallel training over MPI, in Horovod's shape.

Every process (a *rank*) holds the whole model and trains it on its own shard
of the data. After each backward pass the ranks average their gradients, so
every rank applies the same update and the models stay identical:

    g = (1/p) * sum over ranks r of g_r        (one Allreduce per step)

With equal shards of b samples per rank, g_r is the mean gradient over rank
r's b samples, so g is the mean over all p*b samples: the gradient one process
would compute on the union of the p batches (``docs/distributed.md``).

    from minicnn import distributed
    distributed.init()                              # after mpiexec -n P python train.py
    n = len(x) // distributed.size() * distributed.size()   # equal shards
    x_shard = x[distributed.rank():n:distributed.size()]
    model.compile(optimizer=distributed.DistributedOptimizer(SGD(lr=0.05)), ...)
    model.fit(x_shard, y_shard, callbacks=[distributed.BroadcastWeights(root=0)])

``init``, ``rank``, ``size``, ``local_rank``, ``local_size`` and ``comm``
(the mpi4py communicator) set up and describe the job; ``DistributedOptimizer`` wraps any
minicnn optimizer; ``broadcast_weights`` and the ``BroadcastWeights`` callback
start every rank from the root's weights (and optimizer state, for a resumed
run); ``allreduce`` averages a number or array over the ranks, and ``fit``
averages its epoch logs over the ranks when the optimizer is distributed, so
every rank logs, checkpoints and stops on the same numbers. ``set_seed`` seeds
each rank's own random streams (dropout, shuffling), reproducibly.

MPI comes from mpi4py (``pip install "minicnn[distributed]"`` brings it and
MPICH); CuPy arrays are averaged by NCCL through ``cupy.cuda.nccl``.
"""
from __future__ import annotations

from minicnn.distributed.callbacks import BroadcastWeights, broadcast_weights
from minicnn.distributed.mpi import (INSTALL_HELP, allreduce, average_logs, comm, init,
                                     is_initialized, local_rank, local_size, rank, set_seed,
                                     size)
from minicnn.distributed.optimizer import DistributedOptimizer, is_distributed

__all__ = ["BroadcastWeights", "DistributedOptimizer", "INSTALL_HELP", "allreduce",
           "average_logs", "broadcast_weights", "comm", "init", "is_distributed",
           "is_initialized", "local_rank", "local_size", "rank", "set_seed", "size"]
