"""This project against TRL on the same RL work, one after the other in one run, on one machine.

    pip install -r requirements-bench.txt          # TRL: for this benchmark only
    python scripts/bench/vs_trl.py                 # GRPO and DPO, 1 paired run each
    python scripts/bench/vs_trl.py --work dpo --runs 3 --out bench-out/vs_trl

Both sides start from the same SFT model (``--sft DIR``; without it this project's stage 1 trains
one into ``<out>/sft`` once) and see the same rows in the same order (the order this project's
loader yields them with ``--seed``; TRL is given them pre-ordered with shuffling off, and for DPO
pre-tokenised, so the token ids are equal). Same hyper-parameters: LoRA (rank 16, alpha 32, all
linear layers of the blocks) at 2e-4 for GRPO, full fine-tuning at 5e-6 for DPO; fp32 and no
gradient checkpointing on both sides (TRL's defaults are bf16 and checkpointing; this CPU has no
bf16 units); AdamW (0.9, 0.95), no weight decay, cosine schedule.

- **GRPO**: ``--iterations`` (16) x ``--prompts`` (4) x ``--answers`` (4), <= ``--max-new-tokens``
  (48) new tokens at T = 1, the bundled checker as the reward, group-normalised advantages, one
  update per rollout batch, no KL term, DAPO token-mean loss (TRL's default).
- **DPO**: ``--dpo-steps`` (40) x ``--dpo-pairs`` (8), beta 0.1, 5 warm-up steps, reference = the
  SFT model.

Each side runs as its own process: "process" is the wall time of that process (what a user waits
for: imports, model loading, data, training, saving), "loop" its training loop (this project:
the stage's ``train_loop_s``; TRL: ``trainer.train()``). Neither evaluates inside the timed run;
afterwards the bench answers ``--eval-prompts`` (96) held-out prompts greedily with each saved model
(the same evaluation for both) for the pass-rate. Prints samples/s (GRPO: answers, DPO: pairs),
the ratios this project / TRL, and writes ``<out>/vs_trl.json`` and ``<out>/vs_trl.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PRESET = {"grpo": ROOT / "training/configs/smollm2-grpo.yaml", "dpo": ROOT / "training/configs/smollm2-dpo.yaml"}


def shared_flags(a) -> dict[str, list[str]]:
    """The stage flags that define the work (this project's side); the TRL side mirrors them."""
    common = ["--seed", str(a.seed), "--adam_beta1", "0.9", "--adam_beta2", "0.95", "--weight_decay", "0",
              "--lr_scheduler_type", "cosine", "--gradient_checkpointing", "false", "--dtype", "fp32"]
    grpo = common + ["--max_steps", str(a.iterations), "--per_device_generation_batch_size", str(a.prompts),
                     "--num_samples_per_prompt", str(a.answers), "--per_device_training_batch_size",
                     str(a.prompts * a.answers), "--ppo_epochs", "1", "--max_answer_seq_len", str(a.max_new_tokens),
                     "--kl_coef", "0", "--dynamic_filtering", "false", "--missing_eos_penalty", "0",
                     "--loss_agg", "token", "--std_normalize", "true", "--temperature", "1.0", "--top_p", "1.0",
                     "--top_k", "0", "--cliprange", "0.2", "--num_warmup_steps", "0"]
    dpo = common + ["--max_steps", str(a.dpo_steps), "--per_device_train_batch_size", str(a.dpo_pairs),
                    "--gradient_accumulation_steps", "1", "--beta", "0.1", "--num_warmup_steps", "5"]
    return {"grpo": grpo, "dpo": dpo}


def stage_config(work: str, a, sft: str):
    from training.utils.arguments import parse_config

    argv = ["--config", str(PRESET[work]), "--model_name_or_path", sft, *shared_flags(a)[work]]
    return parse_config(argv, "bench", stage="rl" if work == "grpo" else "dpo")


def ordered_rows(work: str, a, sft: str) -> list[dict]:
    """The training rows in the order this project's stage consumes them."""
    from training.utils.data import build_phase
    from training.utils.loop import make_loader
    from training.utils.model import load_tokenizer

    cfg = stage_config(work, a, sft)
    tok = load_tokenizer(sft, padding_side="left" if work == "grpo" else "right")
    train, _, _, _ = build_phase(cfg.data, tok, 3 if work == "grpo" else 2, cfg.optim.seed)
    n = a.iterations * a.prompts if work == "grpo" else a.dpo_steps * a.dpo_pairs
    loader = make_loader(train, a.prompts if work == "grpo" else a.dpo_pairs, lambda rows: rows, True, cfg.optim.seed)
    rows: list[dict] = []
    while len(rows) < n:                         # epochs as the stage's loaders run them
        loader.sampler.set_epoch(len(rows) // max(len(train), 1))
        for batch in loader:
            rows += batch
    return rows[:n], cfg


# ---------------------------------------------------------------- TRL side (its own process)

def trl_grpo(a, sft: str, out: Path) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from training.utils.data.checker import reward as checker

    rows, cfg = ordered_rows("grpo", a, sft)
    ds = Dataset.from_list([{"prompt": r["prompt_text"]} for r in rows])

    def checker_reward(prompts, completions, **_):
        return [checker(p, c.strip()) for p, c in zip(prompts, completions)]

    args = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=a.prompts * a.answers, num_generations=a.answers,
        max_completion_length=a.max_new_tokens, max_steps=a.iterations, learning_rate=cfg.lora.lora_learning_rate,
        adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.0, lr_scheduler_type="cosine", warmup_steps=0,
        beta=0.0, num_iterations=1, epsilon=0.2, loss_type="dapo", scale_rewards="group", temperature=1.0,
        top_p=1.0, top_k=0, shuffle_dataset=False, bf16=False, gradient_checkpointing=False, use_cpu=True,
        seed=a.seed, logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=False)
    lora = LoraConfig(r=cfg.lora.lora_dim, lora_alpha=cfg.lora.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=sft, reward_funcs=checker_reward, args=args, train_dataset=ds, peft_config=lora)
    t0 = time.time()
    trainer.train()
    loop = time.time() - t0
    model = trainer.model.merge_and_unload()
    model.save_pretrained(out / "actor")
    trainer.processing_class.save_pretrained(out / "actor")
    return {"loop_s": loop, "samples": a.iterations * a.prompts * a.answers}


def trl_dpo(a, sft: str, out: Path) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows, cfg = ordered_rows("dpo", a, sft)
    ds = Dataset.from_list([{"prompt_ids": r["chosen_ids"][:r["prompt_len"]], "chosen_ids": r["chosen_ids"][r["prompt_len"]:],
                             "rejected_ids": r["rejected_ids"][r["prompt_len"]:]} for r in rows])

    class PreTokenized(DPOTrainer):            # the rows are this project's token ids: keep them as they are
        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset

    args = DPOConfig(
        output_dir=str(out), per_device_train_batch_size=a.dpo_pairs, max_steps=a.dpo_steps,
        learning_rate=cfg.optim.learning_rate, adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.0,
        lr_scheduler_type="cosine", warmup_steps=cfg.optim.num_warmup_steps, beta=cfg.dpo.beta,
        train_sampling_strategy="sequential", bf16=False, gradient_checkpointing=False, use_cpu=True, seed=a.seed,
        logging_steps=1, save_strategy="no", report_to=[], max_length=None)
    trainer = PreTokenized(model=sft, args=args, train_dataset=ds)
    t0 = time.time()
    trainer.train()
    loop = time.time() - t0
    trainer.save_model(str(out / "actor"))
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {"loop_s": loop, "samples": a.dpo_steps * a.dpo_pairs, "losses": losses}


# ---------------------------------------------------------------- this project's side

def ours(work: str, a, sft: str, out: Path) -> list[str]:
    script = {"grpo": "training/step3_rlhf_finetuning/main.py", "dpo": "training/step2_reward_model_finetuning/dpo_main.py"}
    return [sys.executable, str(ROOT / script[work]), "--config", str(PRESET[work]), "--model_name_or_path", sft,
            "--output_dir", str(out), "--overwrite", "--eval_interval", "0", "--eval_at_start", "false",
            "--final_eval", "false", "--plots", "false", "--disable_tqdm", "true", *shared_flags(a)[work],
            *a.ours_flags]


def our_loop(work: str, out: Path) -> dict:
    from training.utils.logging import read_metrics

    rows = read_metrics(out / "metrics.jsonl")
    timing = [r for r in rows if r["split"] == "time"][-1]
    res = {"loop_s": timing["train_loop_s"]}
    train = [r for r in rows if r["split"] == "train"]
    if work == "grpo":
        for k in ("generation_s", "experience_s", "train_s"):
            res[k] = sum(r[k] for r in train)
    else:
        res["losses"] = [r["loss"] for r in train]
    return res


# ---------------------------------------------------------------- the run

def timed(cmd: list[str], log: Path) -> float:
    t0 = time.time()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode
    if rc != 0:
        sys.exit(f"{' '.join(cmd[:3])} ... failed (exit {rc}); see {log}")
    return time.time() - t0


def pass_rate(model_dir: Path, n: int) -> float:
    from inference.passrate import evaluate_model, held_out_prompts

    return evaluate_model(str(model_dir), max_new_tokens=64, batch_size=32, prompts=held_out_prompts(n))["pass_rate"]


def sft_model(a, out: Path) -> str:
    if a.sft:
        return a.sft
    run = out / "sft"
    model = run / "actor-models" / "smollm2-135m"
    if not (model / "summary.json").is_file():
        print(f"training the starting SFT model into {run} (once)", flush=True)
        timed([sys.executable, "train.py", "--step", "1", "--output-dir", str(run), "--seed", str(a.seed)], out / "sft.log")
    return str(model)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--work", nargs="+", default=["grpo", "dpo"], choices=("grpo", "dpo"))
    ap.add_argument("--runs", type=int, default=1, help="paired runs (this project, then TRL) per work")
    ap.add_argument("--sft", default="", help="starting model (default: train one with stage 1 into <out>/sft)")
    ap.add_argument("--out", default="bench-out/vs_trl")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--iterations", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--answers", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--dpo-steps", type=int, default=40)
    ap.add_argument("--dpo-pairs", type=int, default=8)
    ap.add_argument("--eval-prompts", type=int, default=96, help="held-out prompts for the pass-rate (0: skip)")
    ap.add_argument("--sides", nargs="+", default=["ours", "trl"], choices=("ours", "trl"))
    ap.add_argument("--ours-flags", nargs=argparse.REMAINDER, default=[],
                    help="extra flags for this project's stage (e.g. --share_prompt_forward false), last")
    ap.add_argument("--trl-side", choices=("grpo", "dpo"), help=argparse.SUPPRESS)     # the TRL process itself
    ap.add_argument("--trl-out", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    a = parse(argv)
    if a.trl_side:                               # inside the TRL process
        out = Path(a.trl_out)
        res = (trl_grpo if a.trl_side == "grpo" else trl_dpo)(a, a.sft, out)
        (out / "trl_result.json").write_text(json.dumps(res) + "\n")
        return res
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sft = sft_model(a, out)
    import torch
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "cpu_threads": torch.get_num_threads()}
    try:
        import trl
        versions["trl"] = trl.__version__
    except ImportError:
        if "trl" in a.sides:
            sys.exit("TRL is not installed: pip install -r requirements-bench.txt")
    results: dict = {"versions": versions, "sft": sft, "runs": {}}
    base = ["--sft", sft, "--seed", str(a.seed), "--iterations", str(a.iterations), "--prompts", str(a.prompts),
            "--answers", str(a.answers), "--max-new-tokens", str(a.max_new_tokens), "--dpo-steps", str(a.dpo_steps),
            "--dpo-pairs", str(a.dpo_pairs)]
    for work in a.work:
        runs = results["runs"][work] = []
        for r in range(a.runs):
            run: dict = {}
            for side in a.sides:
                d = out / f"{work}-{side}-{r}"
                d.mkdir(parents=True, exist_ok=True)
                print(f"{work} run {r + 1}/{a.runs}: {side} ...", flush=True)
                if side == "ours":
                    wall = timed(ours(work, a, sft, d), d / "process.log")
                    res = our_loop(work, d)
                    model = d / ("actor" if work == "grpo" else "")
                else:
                    wall = timed([sys.executable, __file__, *base, "--trl-side", work, "--trl-out", str(d)], d / "process.log")
                    res = json.loads((d / "trl_result.json").read_text())
                    model = d / "actor"
                res["process_s"] = wall
                n = a.iterations * a.prompts * a.answers if work == "grpo" else a.dpo_steps * a.dpo_pairs
                res["samples_per_s_loop"], res["samples_per_s_process"] = n / res["loop_s"], n / wall
                if a.eval_prompts:
                    res["pass_rate"] = pass_rate(model, a.eval_prompts)
                run[side] = res
                print(f"  {side}: loop {res['loop_s']:.1f} s, process {wall:.1f} s"
                      + (f", pass-rate {res['pass_rate']:.3f}" if "pass_rate" in res else ""), flush=True)
            if len(run) == 2:
                run["ratio_loop"] = run["trl"]["loop_s"] / run["ours"]["loop_s"]
                run["ratio_process"] = run["trl"]["process_s"] / run["ours"]["process_s"]
                if work == "dpo" and run["ours"].get("losses") and run["trl"].get("losses"):
                    run["max_loss_diff"] = max(abs(x - y) for x, y in zip(run["ours"]["losses"], run["trl"]["losses"]))
            runs.append(run)
    if a.eval_prompts:
        results["sft_pass_rate"] = pass_rate(Path(sft), a.eval_prompts)
    results["eval_prompts"] = a.eval_prompts
    (out / "vs_trl.json").write_text(json.dumps(results, indent=2) + "\n")
    md = table(results)
    (out / "vs_trl.md").write_text(md + "\n")
    print(md)
    return results


def table(results: dict) -> str:
    lines = [f"versions: {results['versions']}", "",
             "| work | side | loop s (median) | process s (median) | samples/s loop | samples/s process | pass-rate |",
             "|---|---|---|---|---|---|---|"]
    for work, runs in results["runs"].items():
        for side in ("ours", "trl"):
            rs = [r[side] for r in runs if side in r]
            if not rs:
                continue
            med = lambda k: statistics.median(r[k] for r in rs)
            pr = ", ".join(f"{r['pass_rate']:.3f}" for r in rs if "pass_rate" in r) or "-"
            lines.append(f"| {work} | {side} | {med('loop_s'):.1f} | {med('process_s'):.1f} | "
                         f"{med('samples_per_s_loop'):.3f} | {med('samples_per_s_process'):.3f} | {pr} |")
        ratios = [r for r in runs if "ratio_loop" in r]
        if ratios:
            lines.append(f"| {work} | **ratio ours / TRL** | {statistics.median(r['ratio_loop'] for r in ratios):.2f}x | "
                         f"{statistics.median(r['ratio_process'] for r in ratios):.2f}x | | | |")
    if "sft_pass_rate" in results:
        lines.append(f"\nSFT start: pass-rate {results['sft_pass_rate']:.3f} on {results['eval_prompts']} held-out prompts")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
