"""Stage 3 on the Hybrid Engine against vLLM (``--rollout_engine``), paired and alternating.

Each repetition runs stage 3 twice, once per engine (the order alternates between repetitions), with
the same preset, models, seed and iterations, and reads each run's ``metrics.jsonl``. Per run, the
medians over its iterations after the first (the first also builds the vLLM engine, timed as start-up):

- rollout tokens/s (``generation_tokens_per_s``) and rollout seconds (``generation_s``, syncs included);
- seconds per iteration (the gap between two iterations' records: rollout, scoring, update);
- ``vllm_sync_s``: sending the actor's weights to vLLM;
- ``logprob_gap_mean``: the sampler's log-probs against the training forward.

    python scripts/bench/rollout_engines.py --preset grpo --actor smollm2-135m
    python scripts/bench/rollout_engines.py --preset step3 \\
        --actor bench-out/learning-main/seed1/actor-models/smollm2-135m \\
        --reward bench-out/learning-main/seed1/reward-models/smollm2-135m

Prints a JSON line and a markdown table with the vLLM / Hybrid Engine ratios of the medians over the
repetitions. Give ``scripts/bench/stage_steps.py`` figures of the same day beside it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINES = ("hybrid", "vllm")


def run(engine: str, a, out: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "training" / "step3_rlhf_finetuning" / "main.py"),
           "--config", str(ROOT / "training" / "configs" / f"smollm2-{a.preset}.yaml"),
           "--actor_model_name_or_path", a.actor, "--output_dir", str(out), "--max_steps", str(a.iterations),
           "--rollout_engine", engine, "--seed", str(a.seed), "--disable_tqdm", "--plots", "false",
           "--enable_tensorboard", "false", "--data_output_path", str(out.parent / "cache")]
    if a.reward:
        cmd += ["--reward_model_name_or_path", a.reward]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"{engine} run failed ({r.returncode}):\n{r.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in rows if x.get("split") == "train"]
    later = train[1:]
    med = lambda key: statistics.median(x[key] for x in later if key in x) if any(key in x for x in later) else None  # noqa: E731
    gaps = [b["time"] - a_["time"] for a_, b in zip(train, train[1:])]
    return {"engine": engine, "wall_s": wall, "first_iteration_s": train[0]["time"],
            "tokens_per_s": med("generation_tokens_per_s"), "rollout_s": med("generation_s"),
            "iteration_s": statistics.median(gaps), "sync_s": med("vllm_sync_s"),
            "logprob_gap_mean": med("logprob_gap_mean"), "iterations": len(train)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="grpo", help="training/configs/smollm2-<preset>.yaml (step3: the main job's)")
    ap.add_argument("--actor", default="smollm2-135m", help="the actor's starting model")
    ap.add_argument("--reward", default=None, help="the reward model (the step3 preset needs one)")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args(argv)

    runs = []
    with tempfile.TemporaryDirectory(prefix="rollout-engines-") as tmp:
        for i in range(a.repeats):
            order = ENGINES if i % 2 == 0 else ENGINES[::-1]
            for e in order:
                r = run(e, a, Path(tmp) / f"{e}-{i}")
                runs.append(r)
                print(json.dumps(r), flush=True)
    keys = ("tokens_per_s", "rollout_s", "iteration_s", "sync_s", "first_iteration_s", "logprob_gap_mean")
    summary = {e: {k: statistics.median(r[k] for r in runs if r["engine"] == e and r[k] is not None)
                   for k in keys if any(r[k] is not None for r in runs if r["engine"] == e)} for e in ENGINES}
    ratio = {k: summary["vllm"][k] / summary["hybrid"][k] for k in ("tokens_per_s", "rollout_s", "iteration_s")}
    result = {"preset": a.preset, "actor": a.actor, "iterations": a.iterations, "repeats": a.repeats,
              "runs": runs, "median": summary, "vllm_over_hybrid": ratio}
    print(json.dumps(result))
    print(f"\n| median of {a.repeats} | Hybrid Engine | vLLM | vLLM / Hybrid |\n|---|---|---|---|")
    def fmt(x):
        return "-" if x is None else f"{x:.3g}"

    for k in keys:
        h, v = summary["hybrid"].get(k), summary["vllm"].get(k)
        print(f"| {k} | {fmt(h)} | {fmt(v)} | {fmt(ratio.get(k))} |")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
