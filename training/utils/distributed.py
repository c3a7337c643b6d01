"""Process-group set-up, device choice, seeding and rank helpers."""
from __future__ import annotations

import os
import random
import socket
import time

import numpy as np
import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DistributedStartError(RuntimeError):
    """The ranks of a run could not all meet: a missing node, an unreachable master, a wrong count."""


def init_distributed(timeout_s: float = 1800.0) -> None:
    """Initialise torch.distributed through DeepSpeed (nccl on CUDA, gloo on CPU).

    Works under the ``deepspeed`` launcher and as a plain single process (rank 0 of 1). Every rank
    waits at most ``timeout_s`` for the others, at start-up and in every collective afterwards; a
    rendezvous that does not complete ends with ``DistributedStartError`` saying what to check.
    """
    import datetime

    import deepspeed
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    announce_op_build()
    try:
        deepspeed.init_distributed(timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, TimeoutError, ConnectionError) as e:       # torch's DistStoreError is a RuntimeError
        env = os.environ
        raise DistributedStartError(
            f"rank {env.get('RANK')} of {env.get('WORLD_SIZE')}: the ranks did not all meet at "
            f"{env.get('MASTER_ADDR')}:{env.get('MASTER_PORT')} within {timeout_s:g} s ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Check that every node was started, with the same "
            f"--num-nodes and ranks per node, and that the master address and port are reachable from every "
            f"node") from e


def same_on_every_rank(name: str, value: dict) -> None:
    """Stop every rank with one message when ``value`` (e.g. the run's config) differs between ranks:
    nodes launched with different flags or files would otherwise train different things or hang."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    diffs = sorted({k for other in out[1:] for k in set(out[0]) | set(other) if out[0].get(k) != other.get(k)})
    if diffs:
        where = ", ".join(f"{k}: " + " / ".join(f"rank {r} {v.get(k)!r}" for r, v in enumerate(out)) for k in diffs[:3])
        raise DistributedStartError(f"the ranks were started with different {name} ({where}"
                                    f"{', ...' if len(diffs) > 3 else ''}): launch every node with the same "
                                    f"command and files")


def announce_op_build() -> None:
    """On CPU, DeepSpeed compiles its shared-memory communication op the first time (a silent minute
    or so on 2 cores; cached afterwards): say so before it starts, and clear a lock a killed build left."""
    if torch.cuda.is_available():
        return
    from torch.utils.cpp_extension import _get_build_directory

    folder = _get_build_directory("deepspeed_shm_comm", False)
    root = os.path.dirname(folder)
    for op in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        clear_stale_build_lock(os.path.join(root, op))
    built = os.path.join(folder, "deepspeed_shm_comm.so")
    if not os.path.isfile(built) and int(os.environ.get("RANK", "0")) == 0:
        print(f"building DeepSpeed's CPU communication op once (about a minute on 2 cores; cached in "
              f"{os.path.dirname(built)})", flush=True)


STALE_LOCK_S = 600.0


def clear_stale_build_lock(folder: str, *, older_than_s: float = STALE_LOCK_S) -> bool:
    """Remove ``folder/lock`` when a killed op build left it: torch waits on that file forever.

    A build holds its lock file open until it ends, so the lock is stale when it is older than
    ``older_than_s`` (a build takes about a minute) and no process on this machine has it open.
    Returns whether a lock was removed; says so on stdout, naming the file."""
    lock = os.path.join(folder, "lock")
    try:
        age = time.time() - os.path.getmtime(lock)
    except FileNotFoundError:
        return False
    if age < older_than_s or _opened_by_a_process(lock):
        return False
    try:
        os.remove(lock)
    except FileNotFoundError:                     # another rank removed it first
        return False
    print(f"removed {lock}: a build lock {age / 60:.0f} min old that no process holds (a build that was "
          f"killed left it; torch would have waited on it forever)", flush=True)
    return True


def _opened_by_a_process(path: str) -> bool:
    """Whether any process this user can see holds ``path`` open (Linux /proc; elsewhere, assume so)."""
    if not os.path.isdir("/proc/self/fd"):
        return True
    target = os.path.realpath(path)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
            except OSError:
                continue
    return False


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
