"""Is it learning, or one lucky seed? Runs a named train.py configuration for several seeds.

    python scripts/bench/learning.py                       # the main job (SFT, reward model, PPO), 3 seeds
    python scripts/bench/learning.py --config grpo --seeds 1 2 3
    python scripts/bench/learning.py --config dpo --out bench-out/dpo -- --max_steps 60

Each seed is one ``python train.py --seed S`` run in ``<out>/seed<S>/`` (``--seed`` reaches every
stage: initialisation, data order, sampling). The figures of every ``report.json`` are flattened
(``pass_rate.sft``, ``reward_model.held_out_pair_accuracy``, ``gain.ppo``, ``seconds.total``, ...)
and summarised as mean / min / max and a 95% interval across the seeds (Student t) in
``<out>/learning.json`` and a markdown table in ``<out>/learning.md`` (also printed), beside each
seed's own gain with its paired-bootstrap interval over prompts. ``--eval-set dev`` evaluates on the
dev set (where presets and levers are chosen); the default is the test set (what results report).
Arguments after ``--`` go to train.py.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from inference.intervals import interval_text, seed_interval  # noqa: E402
from training.utils.rl.advantages import critic_free  # noqa: E402  (the algorithm registry)

CONFIGS = {          # name -> train.py arguments
    "main": [],          # PPO with the trained reward model
    **{algo: ["--algo", algo] for algo in critic_free()},    # grpo, dr_grpo, rloo, remax, ...: checker reward
    # RLOO rewarded by the trained reward model (the checker only judges): SFT, reward model, RLOO
    # with the critic-free preset (12 iterations; --reward reaches stage 3 only, while a shared flag
    # such as --max_steps would reach every stage, so a shorter stage 3 is run as its own
    # `train.py --step 3 ... --max_steps N` on this output)
    "rloo-rm": ["--algo", "rloo", "--step", "1", "2", "3", "--reward", "model"],
    # iterated RLHF at the main job's label budget (384): 192 labels in stage 2, then every 2 of stage 3's
    # 8 iterations the reward model trains again on 64 labels of the latest rollouts (3 refreshes)
    "main-iterated": ["--label_budget", "192", "--reward_refresh_interval", "2", "--reward_refresh_labels", "64"],
    "dpo": ["--algo", "dpo"],
    # the main job with a correctness head: every labelled answer also trains a pointwise BCE term (B1)
    "main-pointwise": ["--pointwise_weight", "1"],
    # GRPO with the bundled calculator: stage 1 on bundled-tools (math rows call it, then answer from its
    # result), stage 3 in conversations of up to 3 turns; every model is evaluated with the calculator
    "grpo-tools": ["--algo", "grpo", "--config", str(ROOT / "training" / "configs" / "tools-calculator.yaml")],
}


# the stages each configuration runs after SFT, for --sft-from (critic-free algorithms: stage 3 only)
AFTER_SFT = {"main": ["2", "3"], "rloo-rm": ["2", "3"], "main-iterated": ["2", "3"], "dpo": ["2"],
             "main-pointwise": ["2", "3"]}


def flatten(report: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a report as dotted names."""
    out = {}
    for k, v in report.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        elif isinstance(v, (int, float)):      # booleans count as 0 / 1 (e.g. how many seeds rose)
            out[name] = float(v)
    return out


def figures(report: dict, wall: float) -> dict[str, float]:
    """A run's numeric figures; ``gain.<model>`` (over the model it started from) and its interval
    ``gain_lo.<model>`` / ``gain_hi.<model>`` come from the report's paired bootstrap."""
    f = {k: v for k, v in flatten(report).items() if not k.startswith("gain.")}
    for name, g in report.get("gain", {}).items():
        f[f"gain.{name}"], f[f"gain_lo.{name}"], f[f"gain_hi.{name}"] = g["gain"], g["lo"], g["hi"]
        for task, t in g.get("per_task", {}).items():
            f[f"task_gain.{name}.{task}"] = t["gain"]
    f["seconds.process"] = wall
    return f


def summarise(per_seed: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    """{figure: {mean, min, max, n, lo, hi}} over the seeds (lo / hi: a 95% Student-t interval)."""
    names = sorted(set().union(*(f.keys() for f in per_seed.values())))
    return {n: seed_interval([f[n] for f in per_seed.values() if n in f]) for n in names}


KEY_FIGURES = ("pass_rate.", "gain.", "task_gain.", "reward_model.held_out_pair_accuracy",
               "reward_model.on_policy", "reward_model.labels", "reward_model.policy_pairs",
               "reward_model.synthetic_pairs", "rm_score.",
               "kl_to_reference.", "reward_trend.", "gold_trend.", "agreement_trend.", "reward_refresh.labels",
               "reward_refresh.pairs", "seconds.", "stage_seconds.")


def markdown(name: str, summary: dict, per_seed: dict[int, dict], command: str, prompts: int | None,
             eval_set: str | None) -> str:
    seeds = list(per_seed)
    lines = [f"### `{name}`: {len(seeds)} seeds ({', '.join(map(str, seeds))})"
             + (f", {prompts} {eval_set or 'held-out'} prompts" if prompts else ""), "",
             f"Command: `{command}`", ""]
    gains = sorted(k[5:] for k in summary if k.startswith("gain."))
    if gains:
        lines += ["| gain (points) | " + " | ".join(f"seed {s} (95% over prompts)" for s in seeds)
                  + " | mean | min | 95% over seeds |", "|---|" + "---|" * (len(seeds) + 3)]
        for g in gains:
            cells = [f"{100 * f['gain.' + g]:+.1f} ({interval_text(f['gain_lo.' + g], f['gain_hi.' + g], signed=True)})"
                     if "gain." + g in f else "-" for f in per_seed.values()]
            s = summary["gain." + g]
            lines.append(
                f"| {g} | "
                + " | ".join(cells)
                + f" | {100 * s['mean']:+.1f} | {100 * s['min']:+.1f}"
                + f" | {interval_text(s['lo'], s['hi'], signed=True)} |"
            )
        lines.append("")
    lines += ["| figure | mean | min | max | 95% over seeds |", "|---|---|---|---|---|"]
    for k, s in summary.items():
        if k.startswith(KEY_FIGURES):
            lines.append(
                f"| {k} | {s['mean']:.3f} | {s['min']:.3f} | {s['max']:.3f} | {s['lo']:.3f} .. {s['hi']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="main", choices=sorted(CONFIGS), help="which train.py configuration")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: 1 2 3)")
    ap.add_argument("--n", type=int, default=3, help="number of seeds when --seeds is not given")
    ap.add_argument("--out", default=None, help="output directory (default: bench-out/learning-<config>)")
    ap.add_argument("--actor-model", default=None, help="passed to train.py (default: its own)")
    ap.add_argument("--eval-set", default="test", choices=("test", "dev"),
                    help="the closing evaluation's set: test (report) or dev (choose presets and levers)")
    ap.add_argument("--sft-from", default=None,
                    help="start from these SFT models instead of training them ('{seed}' is replaced by each seed, "
                         "e.g. bench-out/learning-main/seed{seed}/actor-models/smollm2-135m: the same preset and seed "
                         "train the same SFT model, so this only saves its time)")
    ap.add_argument("--reuse", action="store_true",
                    help="read the seeds whose <out>/seed<S>/report.json exists (same command) instead of running them")
    a = ap.parse_args(argv)
    seeds = a.seeds or list(range(1, a.n + 1))
    out = Path(a.out or ROOT / "bench-out" / f"learning-{a.config}")
    out.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, str(ROOT / "train.py"), *CONFIGS[a.config]]
    if a.actor_model:
        base += ["--actor-model", a.actor_model, "--reward-model", a.actor_model]
    base += ["--eval-set", a.eval_set]
    per_seed: dict[int, dict[str, float]] = {}
    for s in seeds:
        d = out / f"seed{s}"
        cmd = base + ["--output-dir", str(d), "--seed", str(s), *extra]
        if a.sft_from:
            cmd += ["--sft-model", a.sft_from.format(seed=s), "--step", *AFTER_SFT.get(a.config, ["3"])]
        if a.reuse and (d / "report.json").is_file():
            report = json.loads((d / "report.json").read_text())
            per_seed[s] = figures(report, report["seconds"]["total"])
            print(f"seed {s}: read from {d / 'report.json'}", flush=True)
            continue
        print(f"\n##### seed {s}: {' '.join(cmd)}", flush=True)
        t0 = time.time()
        rc = subprocess.call(cmd, cwd=ROOT)
        wall = time.time() - t0
        if rc != 0:
            sys.exit(f"seed {s} failed (exit {rc}); its logs are under {d / 'logs'}")
        report = json.loads((d / "report.json").read_text())
        per_seed[s] = figures(report, wall)
        print(f"seed {s}: {wall:.0f} s, pass-rate {report.get('pass_rate')}", flush=True)
    summary = summarise(per_seed)
    command = "python scripts/bench/learning.py " + " ".join(argv + (["--"] + extra if extra else []))
    prompts = json.loads((out / f"seed{seeds[0]}" / "report.json").read_text()).get("held_out_prompts")
    md = markdown(a.config, summary, per_seed, command.strip(), prompts, a.eval_set)
    result = {"config": a.config, "seeds": seeds, "command": command.strip(), "held_out_prompts": prompts,
              "eval_set": a.eval_set,
              "summary": summary, "per_seed": per_seed}
    (out / "learning.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "learning.md").write_text(md)
    print("\n" + md)
    print(f"(also in {out / 'learning.json'} and {out / 'learning.md'})")
    return result


if __name__ == "__main__":
    main()
