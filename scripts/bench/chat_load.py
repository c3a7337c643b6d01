"""Load check of the OpenAI-compatible server on loopback.

Starts ``chat.py --serve``'s app in this process, asks every prompt once on its own (the reference
answers, greedy), then fires ``--requests`` concurrent chat requests and checks each answer equals
its reference. Prints requests/s and p50/p95 latency and one JSON line.

    python scripts/bench/chat_load.py --model tiny --requests 50 --max_tokens 32

``--collect off on compare --rounds 3 --clients 4``: the cost of collection (``--collect DIR``, and with
``--compare``'s second answers): the modes in turn, round after round (paired, alternating), each a sustained
load of ``--clients`` clients asking one question after another (``--requests`` in all); p50 / p95 latency per
mode (medians over rounds) and its ratio to ``off``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx  # noqa: E402

from applications.chat_engine import ChatEngine  # noqa: E402
from applications.server import Background, Limits, create_app  # noqa: E402

PROMPTS = ["What is {a} + {b}?", "Name {a} fruits.", "Write the word 'cat' {a} times.",
           "Spell the number {b} in English.", "Give a title for a story about {a} dragons."]


def prompts(n: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)].format(a=i + 2, b=3 * i + 1) for i in range(n)]


def ask(url: str, prompt: str, max_tokens: int) -> tuple[str, float]:
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/v1/chat/completions", timeout=600, json={
        "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0})
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"], time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--max_tokens", type=int, default=32)
    ap.add_argument("--max_batch", type=int, default=16)
    ap.add_argument("--collect", nargs="+", default=[], choices=("off", "on", "compare"),
                    help="compare these collection modes (paired, alternating) instead of the burst check")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    a = ap.parse_args(argv)
    if a.collect:
        return collection_cost(a)
    engine = ChatEngine(a.model)
    ps = prompts(a.requests)
    with Background(create_app(engine, Limits(max_batch=a.max_batch))) as url:
        t0 = time.perf_counter()
        reference = [ask(url, p, a.max_tokens)[0] for p in ps]
        sequential = time.perf_counter() - t0
        t0 = time.perf_counter()
        with ThreadPoolExecutor(a.requests) as pool:
            got = list(pool.map(lambda p: ask(url, p, a.max_tokens), ps))
        wall = time.perf_counter() - t0
    lat = sorted(x[1] for x in got)
    wrong = [i for i, (ans, _) in enumerate(got) if ans != reference[i]]
    res = {"model": a.model, "requests": a.requests, "max_tokens": a.max_tokens, "max_batch": a.max_batch,
           "correct": a.requests - len(wrong), "wall_s": round(wall, 3), "requests_per_s": round(a.requests / wall, 2),
           "p50_s": round(statistics.median(lat), 3), "p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3),
           "sequential_requests_per_s": round(a.requests / sequential, 2)}
    print(
        f"{res['correct']}/{a.requests} concurrent answers equal the one-at-a-time answers; "
        f"{res['requests_per_s']} requests/s (one at a time: {res['sequential_requests_per_s']}), "
        f"p50 {res['p50_s']} s, p95 {res['p95_s']} s"
    )
    print(json.dumps(res))
    if wrong:
        raise SystemExit(f"requests {wrong} got answers different from their single-request reference")
    return res


def collection_cost(a) -> dict:
    """p50 / p95 latency of a sustained load with collection off, on, and on with --compare."""
    import tempfile

    from applications.collect import Collector

    engine, ps = ChatEngine(a.model), prompts(a.requests)
    reference = {}
    runs: dict = {m: [] for m in a.collect}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for mode in a.collect:
                collect = Collector(f"{tmp}/{mode}-{r}", compare=mode == "compare") if mode != "off" else None
                app = create_app(engine, Limits(max_batch=a.max_batch), collect=collect,
                                 labels=collect.labels if collect is not None else None)
                with Background(app) as url:
                    if not reference:
                        reference.update({p: ask(url, p, a.max_tokens)[0] for p in ps})
                    share = [ps[k::a.clients] for k in range(a.clients)]
                    with ThreadPoolExecutor(a.clients) as pool:
                        done = [x for part in pool.map(lambda qs: [(q, *ask(url, q, a.max_tokens)) for q in qs], share)
                                for x in part]
                    pairs = 0
                    if collect is not None:
                        time.sleep(0.5)           # second answers still generating are not waited for
                        pairs = collect.labels.progress()["total"] if collect.labels is not None else 0
                        collect.close()
                wrong = [q for q, ans, _ in done if ans != reference[q]]
                if wrong:
                    raise SystemExit(f"{mode}: answers to {wrong[:3]} differ from the reference")
                lat = sorted(t for _, _, t in done)
                runs[mode].append({"p50_s": statistics.median(lat), "p95_s": lat[int(0.95 * (len(lat) - 1))],
                                   "pairs": pairs})
                last = runs[mode][-1]
                print(f"round {r + 1} {mode:8s} p50 {last['p50_s']:.3f} s, p95 {last['p95_s']:.3f} s"
                      f"{f', {pairs} pairs queued' if mode == 'compare' else ''}", flush=True)
    res = {"model": a.model, "requests": a.requests, "clients": a.clients, "max_tokens": a.max_tokens,
           "rounds": a.rounds, "modes": {}}
    base = statistics.median(x["p95_s"] for x in runs[a.collect[0]])
    for mode, rs in runs.items():
        p50, p95 = statistics.median(x["p50_s"] for x in rs), statistics.median(x["p95_s"] for x in rs)
        res["modes"][mode] = {"p50_s": round(p50, 3), "p95_s": round(p95, 3), "p95_vs_first": round(p95 / base, 3)}
        print(f"{mode:8s} p50 {p50:.3f} s, p95 {p95:.3f} s ({p95 / base:.2f}x {a.collect[0]}'s p95)")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
