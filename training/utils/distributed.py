"""Process-group set-up, device choice, seeding and rank helpers."""
from __future__ import annotations

import os
import random
import socket

import numpy as np
import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> None:
    """Initialise torch.distributed through DeepSpeed (nccl on CUDA, gloo on CPU).

    Works under the ``deepspeed`` launcher and as a plain single process (rank 0 of 1).
    """
    import deepspeed
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    announce_op_build()
    deepspeed.init_distributed()


def announce_op_build() -> None:
    """On CPU, DeepSpeed compiles its shared-memory communication op the first time (a silent minute
    or so on 2 cores; cached afterwards): say so before it starts."""
    if torch.cuda.is_available():
        return
    from torch.utils.cpp_extension import _get_build_directory

    built = os.path.join(_get_build_directory("deepspeed_shm_comm", False), "deepspeed_shm_comm.so")
    if not os.path.isfile(built) and int(os.environ.get("RANK", "0")) == 0:
        print(f"building DeepSpeed's CPU communication op once (about a minute on 2 cores; cached in "
              f"{os.path.dirname(built)})", flush=True)


def device() -> torch.device:
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    if acc.device_name() == "cpu":
        return torch.device("cpu")
    return torch.device(acc.device_name(), int(os.environ.get("LOCAL_RANK", "0")))


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a list of floats over all ranks (float64 for exact counts)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.to(device()) if device().type != "cpu" else t
        dist.all_reduce(t)
    return t.cpu().tolist()


def rank_checksums(module) -> list[float]:
    """Every rank's checksum of the parameters it holds (sum of |w| in float64), on all ranks.

    Data-parallel ranks must hold identical weights after each step; this makes that visible.
    Under ZeRO-3 each rank holds a different shard, so the sums differ by design.
    """
    import torch.distributed as dist

    s = sum(float(p.detach().double().abs().sum()) for p in module.parameters())
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [s]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, s)
    return [float(x) for x in out]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
