"""This machine's limits, for reading the stage benchmarks against: fp32 matmul GFLOP/s and memory
bandwidth, with the threads torch uses.

    python scripts/bench/machine.py [--json FILE]

Matmul: the best of ``--reps`` square fp32 products of side ``--n`` (2 n^3 FLOPs each, after one
warm-up). Bandwidth: the best of ``--reps`` copies of a ``--mb`` MiB buffer, counting the bytes read
and written. ``scripts/bench/stage_steps.py`` prints the model FLOP/s of a training step as a fraction
of the first, ``scripts/bench/step3_throughput.py`` the weight bytes a decode step reads per second as
a fraction of the second.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b                                              # warm-up: threads, allocator
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def memory_gbps(mb: int = 512, reps: int = 5) -> float:
    import torch

    x = torch.ones(mb * 2 ** 20 // 4)
    y = torch.empty_like(x)
    y.copy_(x)
    best = min(_timed(lambda: y.copy_(x)) for _ in range(reps))
    return 2 * x.numel() * 4 / best / 1e9             # read x, write y


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def probe(n: int = 2048, mb: int = 512, reps: int = 5) -> dict:
    import torch

    return {"torch_threads": torch.get_num_threads(), "matmul_gflops": round(matmul_gflops(n, reps), 1),
            "memory_gbps": round(memory_gbps(mb, reps), 2)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2048, help="side of the square matmul")
    p.add_argument("--mb", type=int, default=512, help="MiB copied for the bandwidth")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", default="", help="write the figures here too")
    a = p.parse_args(argv)
    out = probe(a.n, a.mb, a.reps)
    print(f"fp32 matmul {out['matmul_gflops']} GFLOP/s, memory {out['memory_gbps']} GB/s "
          f"({out['torch_threads']} torch threads)")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
