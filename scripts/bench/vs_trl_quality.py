"""Time to quality, this project against TRL: the held-out pass-rate against training time, several
seeds per side (part of ``vs_trl.py``'s run; ``--quality grpo-preset ppo``, ``--quality-seeds`` (3)).

Each side trains as a user would run it: this project's stage 3 with its preset, TRL with its
closest configuration (the same model, batch shape, epochs, LoRA, rate, schedule, KL and reward;
prompts in this project's loader order).

- **grpo-preset**: ``smollm2-grpo.yaml`` (``train.py --algo grpo``'s stage 3: 16 iterations x 8 prompts
  x 4 answers, the bundled checker as the reward less 0.5 off an answer without EOS, 2 epochs over each
  rollout batch in updates of 8 answers, group-normalised advantages, no KL; this project also drops
  groups whose answers all scored alike and draws prompts by its curriculum) against GRPOTrainer
  (``num_iterations`` 2, ``steps_per_generation`` 4, ``scale_rewards`` group, loss ``dapo``).
- **ppo**: ``smollm2-step3.yaml`` (the main job's stage 3: PPO with a critic, the reward model trained
  by the main job's stage 2 as the only reward, KL 0.05 to the SFT model, 4 answers per prompt with
  the group mean as baseline, prompt curriculum) against TRL's closest: TRL 1.16 has no PPO trainer,
  so GRPOTrainer with the same reward model scoring the same way (its value at the answer's EOS, 1.0
  off an answer without one), KL 0.05 to the SFT model, rewards less the group mean (no std
  scaling), 8 prompts x 4 answers per rollout, two updates of 16 answers each.

``--quality-points`` (4) times a run, evenly spaced, the last after its last iteration, each side
stops its clock and answers the ``--eval-prompts`` (96) held-out prompts greedily (<= 64 new tokens)
with the same function on the model in memory (``inference.passrate.generate``), scored by the
checker. A curve point is (training-loop seconds without the evaluations, pass-rate); the SFT
model's pass-rate is the point at 0 s. Seeds alternate which side runs first.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from vs_trl_tables import SIDES

QUALITY = ("ppo", "grpo-preset")
NAMES = {"ppo": "PPO, main job (TRL: GRPO + the reward model)", "grpo-preset": "GRPO, its preset"}
START = time.time()                      # this process's start, for the process clock


class Curve:
    """Pass-rate points of one run, its own evaluations taken off the clock."""

    def __init__(self, n_prompts: int):
        from inference.passrate import eval_prompts

        self.prompts, self.points, self.paused, self.loop_start = eval_prompts("dev", n_prompts), [], 0.0, None

    def begin(self) -> None:
        if self.loop_start is None:
            self.loop_start = time.time()

    def evaluate(self, model, tok, step: int) -> float:
        import torch

        from inference.passrate import generate
        from training.utils.data.checker import pass_rate

        t = time.time()
        was = model.training
        model.eval()
        with torch.no_grad():
            answers = generate(model, tok, self.prompts, max_new_tokens=64, batch_size=32)
        model.train(was)
        rate = pass_rate(self.prompts, answers)["pass_rate"]
        self.points.append({"step": step, "loop_s": t - self.loop_start - self.paused,
                            "process_s": t - START - self.paused, "pass_rate": rate, "eval_s": time.time() - t})
        self.paused += time.time() - t
        return rate


def patch_ours(curve: Curve) -> None:
    """This project's RL loop evaluates through ``curve`` (``--eval_interval`` sets when; the stage's
    own loop already keeps evaluation time out of its ``train_loop_s``)."""
    from training.utils.rl.runner import RLLoop

    step, done = RLLoop.step, []

    def counted_step(self, it):
        curve.begin()
        out = step(self, it)
        done.append(it)
        return out

    def evaluate(self):
        return {"pass_rate": curve.evaluate(self.trainer.he.engine.module, self.maker.tok, done[-1] if done else 0)}

    RLLoop.step, RLLoop.evaluate = counted_step, evaluate


def trl_callback(curve: Curve, every: int, tok):
    from transformers import TrainerCallback

    class PassRate(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            curve.begin()

        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % every == 0 or state.global_step == state.max_steps:
                curve.evaluate(model, tok, state.global_step)

    return PassRate()


def reward_model_fn(rm_dir: str, tok, penalty: float):
    """This project's reward-model reward on TRL's side: the model's value at the answer's last token
    (its EOS), less ``penalty`` where the answer has no EOS (as ``--missing_eos_penalty``)."""
    import torch

    from training.utils.model import load_reward_model
    from training.utils.model.reward import ValueModel, end_scores
    from training.utils.data.collate import pad_sequences

    model = ValueModel(load_reward_model(rm_dir, tok).eval())

    @torch.no_grad()
    def reward(prompts, completions, completion_ids, row_prompt_ids, **_):
        seqs = [list(p) + list(c) for p, c in zip(row_prompt_ids, completion_ids)]
        ids, mask = pad_sequences(seqs, tok.pad_token_id, left=False)
        end = torch.tensor([len(s) - 1 for s in seqs])
        scores = end_scores(model(ids, mask), end)
        eos = torch.tensor([tok.eos_token_id in c for c in completion_ids])
        return (scores - penalty * (~eos).float()).tolist()

    return reward


def reward_model(bench, a, sft: str, out: Path) -> str:
    """``--rm``, or the main job's stage 2 trained once beside the starting SFT model in ``<out>/sft``."""
    if a.rm:
        return a.rm
    run = out / "sft"
    model = run / "reward-models" / "smollm2-135m"
    if Path(sft) != run / "actor-models" / "smollm2-135m":
        sys.exit("--quality ppo with --sft needs --rm (the reward model trained from that SFT model)")
    if not (model / "summary.json").is_file():
        print(f"training the reward model into {run} (once)", flush=True)
        bench.timed([sys.executable, "train.py", "--step", "2", "--output-dir", str(run), "--seed", str(a.seed)],
                    out / "rm.log")
    return str(model)


def quality_args(bench, a, work: str, seed: int, sft: str):
    """The settings of one time-to-quality run: its preset's batch shape and iterations
    (or ``--quality-iterations``)."""
    from training.utils.arguments import parse_config

    q = argparse.Namespace(**vars(a))
    q.seed = seed
    preset = bench.ROOT / "training/configs" / bench.CONFIGS[work]
    cfg = parse_config(["--config", str(preset), "--model_name_or_path", sft, *bench.shared_flags(q)[work][:4]],
                       "bench", stage="rl")  # --seed, --algo: the preset's own sizes
    q.iterations, q.prompts = (
        a.quality_iterations or cfg.optim.max_steps,
        cfg.rl.rollout.per_device_generation_batch_size,
    )
    q.answers, q.max_new_tokens = cfg.rl.rollout.num_samples_per_prompt, cfg.data.max_answer_seq_len
    q.curve_every = max(1, q.iterations // a.quality_points)
    return q


def quality(bench, a, sft: str, out: Path, sft_rate: float) -> dict:
    """``--quality-seeds`` seeds per work and side, alternating which side runs first; ``bench`` is
    ``vs_trl`` (its commands, clock and result readers)."""
    if "ppo" in a.quality:
        a.rm = reward_model(bench, a, sft, out)
    q = {"runs": {}, "sft_pass_rate": sft_rate, "eval_prompts": a.eval_prompts, "gain": 0.10, "rm": a.rm}
    for i, seed in enumerate(range(a.seed, a.seed + a.quality_seeds)):     # a seed of every work, then the next
        for work in a.quality:
            runs = q["runs"].setdefault(work, [])
            qa = quality_args(bench, a, work, seed, sft)
            run: dict = {"seed": seed, "order": ["ours", "trl"] if i % 2 == 0 else ["trl", "ours"]}
            for side in run["order"]:
                d = out / f"quality-{work}-{side}-{seed}"
                d.mkdir(parents=True, exist_ok=True)
                print(f"time to quality, {work} seed {seed}: {side} ...", flush=True)
                if side == "ours":
                    cmd = bench.ours(work, qa, sft, d)
                    at = cmd.index("--")
                    cmd[at:at] = ["--curve-every", str(qa.curve_every), "--eval-prompts", str(a.eval_prompts)]
                    wall = bench.timed(cmd + ["--eval_interval", str(qa.curve_every), "--final_eval", "true"],
                                       d / "process.log")
                    res = bench.our_result(work, d) | {"points": json.loads((d / "curve.json").read_text())}
                else:
                    wall = bench.timed(
                        [
                            sys.executable,
                            bench.__file__,
                            "--sft",
                            sft,
                            *bench.work_args(qa),
                            "--trl-side",
                            work,
                            "--trl-out",
                            str(d),
                            "--curve-every",
                            str(qa.curve_every),
                            "--eval-prompts",
                            str(a.eval_prompts),
                            "--rm",
                            a.rm,
                        ],
                        d / "process.log",
                    )
                    res = json.loads((d / "trl_result.json").read_text())
                res["process_s"] = wall
                run[side] = res
                print(f"  {side}: " + ", ".join(f"{p['loop_s']:.0f} s {p['pass_rate']:.3f}" for p in res["points"]),
                      flush=True)
            for side in ("ours", "trl"):
                run[side].pop("rows", None)
            runs.append(run)
            q["summary"] = summarize(q, sft_rate, q["gain"])
            (out / "vs_trl_quality.json").write_text(json.dumps(q, indent=2) + "\n")
    return q


def reached(points: list[dict], target: float):
    """Training seconds at the first point at or above ``target`` (None: never)."""
    return next((p["loop_s"] for p in points if p["pass_rate"] >= target - 1e-9), None)


def summarize(q: dict, sft_rate: float, gain: float = 0.10) -> dict:
    """Per work and side: the final pass-rate (mean, min), the training time to SFT + ``gain`` (median of
    the seeds that reach it, and how many do), and the pass-rate of the last point within the time of
    the shortest run of the work (mean over seeds; the SFT rate where a run has no point by then)."""
    out = {}
    for work, runs in q["runs"].items():
        sides = {side: [r[side] for r in runs if side in r] for side in ("ours", "trl")}
        common = min((max(p["loop_s"] for p in r["points"]) for rs in sides.values() for r in rs), default=0.0)
        out[work] = {}
        for side, rs in sides.items():
            if not rs:
                continue
            finals = [r["points"][-1]["pass_rate"] for r in rs]
            times = [t for t in (reached(r["points"], sft_rate + gain) for r in rs) if t is not None]
            at_common = [([sft_rate] + [p["pass_rate"] for p in r["points"] if p["loop_s"] <= common + 1e-9])[-1]
                         for r in rs]
            out[work][side] = {"final_mean": statistics.mean(finals), "final_min": min(finals),
                               "loop_s": statistics.median(r["points"][-1]["loop_s"] for r in rs),
                               "reached": len(times), "seeds": len(rs),
                               "time_to_target_s": statistics.median(times) if times else None,
                               "at_common_s": statistics.mean(at_common), "common_s": common}
    return out


def table(q: dict) -> str:
    sft, gain = q["sft_pass_rate"], q["gain"]
    lines = [f"SFT start {sft:.3f} on {q['eval_prompts']} held-out prompts; target SFT + {gain * 100:.0f} points = "
             f"{sft + gain:.3f}", "",
             "| work | side | seeds | final pass-rate mean (min) | training s (median) | seeds reaching the target | "
             "training s to the target (median) | pass-rate by the shortest run's time (mean) |",
             "|---|---|---|---|---|---|---|---|"]
    for work, sides in q["summary"].items():
        for side, s in sides.items():
            t = f"{s['time_to_target_s']:.0f}" if s["time_to_target_s"] is not None else "-"
            lines.append(
                f"| {NAMES[work]} | {SIDES[side]} | {s['seeds']} | "
                f"{s['final_mean']:.3f} ({s['final_min']:.3f}) | {s['loop_s']:.0f} | {s['reached']}/{s['seeds']} "
                f"| {t} | {s['at_common_s']:.3f} (at {s['common_s']:.0f} s) |"
            )
    return "\n".join(lines)


def plot(q: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    works = list(q["runs"])
    fig, axes = plt.subplots(1, len(works), figsize=(6 * len(works), 4.2), squeeze=False)
    colours = {"ours": "tab:blue", "trl": "tab:orange"}
    for ax, work in zip(axes[0], works):
        for i, run in enumerate(q["runs"][work]):
            for side in ("ours", "trl"):
                if side not in run:
                    continue
                xs = [0.0] + [p["loop_s"] for p in run[side]["points"]]
                ys = [q["sft_pass_rate"]] + [p["pass_rate"] for p in run[side]["points"]]
                ax.plot(xs, ys, "o-", color=colours[side], alpha=0.8,
                        label=SIDES[side] if i == 0 else None)
        ax.axhline(q["sft_pass_rate"] + q["gain"], color="grey", ls="--", lw=1, label="SFT + 10 points")
        ax.set_title(f"{NAMES[work]}\nheld-out pass-rate ({q['eval_prompts']} prompts), one line per seed", fontsize=10)
        ax.set_xlabel("training-loop seconds (2 CPU cores, evaluation excluded)")
        ax.set_ylabel("pass-rate")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
