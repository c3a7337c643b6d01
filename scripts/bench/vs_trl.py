"""This project against TRL on the same work, stage by stage, in alternating pairs on one machine.

    pip install -r requirements-bench.txt          # TRL: for this benchmark only
    python scripts/bench/vs_trl.py --runs 3        # every stage TRL has, 3 alternating pairs each, then
                                                   # the time to quality (3 seeds per side)
    python scripts/bench/vs_trl.py --work dpo grpo --runs 1 --out bench-out/vs_trl

Both sides start from the same SFT model (``--sft DIR``; without it this project's stage 1 trains
one into ``<out>/sft`` once) and train on the same rows in the same order: the order this
project's loader yields them with ``--seed``, which TRL is given pre-ordered with shuffling off and,
for SFT, the reward model and DPO, pre-tokenised (the token ids are equal). Each side records the
rows its training step actually consumed (this project: through its data loader; TRL: through its
collator, for GRPO/RLOO through the reward function) and the run stops if the two lists differ.
Same hyper-parameters and precision (fp32, no gradient checkpointing: TRL's defaults are bf16 and
checkpointing, and this CPU has no bf16 units), AdamW (0.9, 0.95) with no weight decay, cosine
schedule, and the same AdamW implementation (``--optim``: torch's fused kernel on both sides by
default, TRL's own default).

- **SFT**: ``--sft-steps`` (16) x ``--sft-rows`` (8), full fine-tuning at 5e-5, loss on the answer
  tokens (SFTTrainer with ``labels``).
- **Reward model**: ``--rm-steps`` (16) x ``--rm-pairs`` (8), scalar head on the SFT model, full
  fine-tuning at 8e-5, pairwise loss (RewardTrainer).
- **DPO**: ``--dpo-steps`` (16) x ``--dpo-pairs`` (8), beta 0.1, full fine-tuning at 5e-6, reference
  = the SFT model (DPOTrainer).
- **GRPO** and **RLOO**: ``--iterations`` (8) x ``--prompts`` (4) x ``--answers`` (4), <=
  ``--max-new-tokens`` (48) new tokens at T = 1, the bundled checker as the reward, LoRA (rank 16,
  alpha 32, all linear layers) at 2e-4, one update per rollout batch, no KL term; GRPO:
  group-normalised advantages, token-mean loss (TRL's default ``dapo``); RLOO: leave-one-out
  baseline, no normalisation (GRPOTrainer, RLOOTrainer; TRL's RLOO reduces its loss per sequence,
  this project per token: the same forward and backward work).

Each side runs as its own process. "process" is its wall time (what a user waits for: imports,
model loading, data, training, saving), "loop" its training loop (this project: the stage's
``train_loop_s``; TRL: ``trainer.train()``). ``--runs N`` runs N pairs per work in alternating
order (this project first in pairs 1, 3, ...; TRL first in pairs 2, 4, ...) and reports the median
and range of each ratio. Neither side evaluates inside the timed run; afterwards the models of the
first ``--eval-pairs`` pairs answer ``--eval-prompts`` (96) held-out prompts greedily (the same
evaluation for both) for the pass-rate. Then the time to quality (``vs_trl_quality.py``: the held-out
pass-rate against training time, each side as a user runs it, ``--quality-seeds`` (3) seeds per
side; ``--quality`` with no work skips it, ``--work`` with none runs it alone). Writes
``<out>/vs_trl.json``, ``<out>/vs_trl_quality.json``, ``<out>/vs_trl.md`` and ``<out>/time_to_quality.png``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from vs_trl_quality import QUALITY, Curve, quality  # noqa: E402  (its START is this process's start)
from vs_trl_tables import table  # noqa: E402

WORKS = ("sft", "rm", "dpo", "grpo", "rloo")
RL = ("grpo", "rloo") + QUALITY         # the time-to-quality works (vs_trl_quality.py) are RL too
RL_SCRIPT = "training/step3_rlhf_finetuning/main.py"
CONFIGS = {"sft": "smollm2-step1.yaml", "rm": "smollm2-step2.yaml", "dpo": "smollm2-dpo.yaml",
           "grpo": "smollm2-grpo.yaml", "rloo": "smollm2-grpo.yaml", "grpo-preset": "smollm2-grpo.yaml",
           "ppo": "smollm2-step3.yaml"}
SCRIPTS = {
    "sft": "training/step1_supervised_finetuning/main.py",
    "rm": "training/step2_reward_model_finetuning/main.py",
    "dpo": "training/step2_reward_model_finetuning/dpo_main.py",
    **{w: RL_SCRIPT for w in RL},
}
STAGE = {"sft": "sft", "rm": "reward", "dpo": "dpo", **{w: "rl" for w in RL}}
PHASE = {"sft": 1, "rm": 2, "dpo": 2, **{w: 3 for w in RL}}


def shared_flags(a) -> dict[str, list[str]]:
    """The stage flags that define the work (this project's side); the TRL side mirrors them."""
    common = ["--seed", str(a.seed), "--adam_beta1", "0.9", "--adam_beta2", "0.95", "--weight_decay", "0",
              "--lr_scheduler_type", "cosine", "--gradient_checkpointing", "false", "--dtype", "fp32",
              "--no_fused_kernels", "false" if a.optim == "fused" else "true"]
    rl = common + ["--max_steps", str(a.iterations), "--per_device_generation_batch_size", str(a.prompts),
                   "--num_samples_per_prompt", str(a.answers), "--per_device_training_batch_size",
                   str(a.prompts * a.answers), "--ppo_epochs", "1", "--max_answer_seq_len", str(a.max_new_tokens),
                   "--kl_coef", "0", "--dynamic_filtering", "false", "--prompt_curriculum", "false",
                   "--missing_eos_penalty", "0", "--temperature", "1.0", "--top_p", "1.0", "--top_k", "0",
                   "--cliprange", "0.2", "--num_warmup_steps", "0"]
    supervised = lambda steps, rows: ["--max_steps", str(steps), "--per_device_train_batch_size", str(rows),
                                      "--gradient_accumulation_steps", "1"]
    return {"sft": common + supervised(a.sft_steps, a.sft_rows) + ["--num_warmup_steps", "5"],
            "rm": common + supervised(a.rm_steps, a.rm_pairs) + ["--num_warmup_steps", "5", "--pairs_from_policy",
                                                                "false", "--on_policy_eval_prompts", "0"],
            "dpo": common + supervised(a.dpo_steps, a.dpo_pairs) + ["--beta", "0.1", "--num_warmup_steps", "5"],
            "grpo": rl + ["--algo", "grpo", "--loss_agg", "token", "--std_normalize", "true"],
            "rloo": rl + ["--algo", "rloo", "--loss_agg", "token"],
            # time to quality: the stage as its preset has it (the main job's with --algo grpo / ppo)
            "grpo-preset": ["--seed", str(a.seed), "--algo", "grpo", "--max_steps", str(a.iterations)],
            "ppo": ["--seed", str(a.seed), "--algo", "ppo", "--max_steps", str(a.iterations),
                    "--reward_model_name_or_path", a.rm]}


def stage_config(work: str, a, sft: str):
    from training.utils.arguments import parse_config

    argv = ["--config", str(ROOT / "training/configs" / CONFIGS[work]), "--model_name_or_path", sft,
            *shared_flags(a)[work]]
    return parse_config(argv, "bench", stage=STAGE[work])


def batch_rows(work: str, a) -> tuple[int, int]:
    """(rows per training step, steps) of ``work``."""
    return {"sft": (a.sft_rows, a.sft_steps), "rm": (a.rm_pairs, a.rm_steps), "dpo": (a.dpo_pairs, a.dpo_steps),
            **{w: (a.prompts, a.iterations) for w in RL}}[work]


def samples(work: str, a) -> int:
    """Samples the loop trains on: rows (SFT), pairs (reward model, DPO), answers (GRPO, RLOO)."""
    per, steps = batch_rows(work, a)
    return per * steps * (a.answers if work in RL else 1)


def fingerprint(work: str, row: dict) -> str:
    """A short id of one training row: its prompt (RL) or its token ids (SFT, reward model, DPO)."""
    key = {"sft": ("input_ids",), "rm": ("chosen_ids", "rejected_ids"), "dpo": ("chosen_ids", "rejected_ids"),
           **{w: ("prompt_text",) for w in RL}}[work]
    prompt = list(row.get("prompt_ids", []))            # TRL's DPO rows hold the prompt apart
    return hashlib.sha1(json.dumps([prompt + list(row[k]) if k != "prompt_text" else row[k] for k in key])
                        .encode()).hexdigest()[:16]


def ordered_rows(work: str, a, sft: str):
    """The training rows in the order this project's stage consumes them, and the stage's config."""
    from training.utils.data import build_phase
    from training.utils.loop import make_loader
    from training.utils.model import load_tokenizer

    cfg = stage_config(work, a, sft)
    tok = load_tokenizer(sft, padding_side="left" if PHASE[work] == 3 else "right")
    train, _, _, _ = build_phase(cfg.data, tok, PHASE[work], cfg.optim.seed)
    per, steps = batch_rows(work, a)
    loader = make_loader(train, per, lambda rows: rows, True, cfg.optim.seed)
    rows: list[dict] = []
    while len(rows) < per * steps:               # epochs as the stage's loaders run them
        loader.sampler.set_epoch(len(rows) // max(len(train), 1))
        for batch in loader:
            rows += batch
    return rows[:per * steps], cfg


def linear_weights(sft: str) -> int:
    """``stage_steps.linear_params`` of the model, built on the meta device (no weights loaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from stage_steps import linear_params

    with torch.device("meta"):
        return linear_params(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(sft)))


def loop_flops(work: str, a, sft: str) -> float:
    """Model FLOPs of the plain work of a supervised loop (SFT, reward model, DPO): 6 x the linear
    weights x every trained token, padding to each batch's longest included, plus 2 x for DPO's
    reference forward (attention's share left out). The same figure for both sides, so each side's
    FLOP/s is this over its loop time; a side that skips part of the plain work (this project's
    scored columns and prompt-once forwards) shows more than it computed."""
    rows, _ = ordered_rows(work, a, sft)
    per, _ = batch_rows(work, a)
    tokens = 0
    for i in range(0, len(rows), per):
        b = rows[i:i + per]
        lens = [len(r["input_ids"]) for r in b] if work == "sft" else \
            [len(r["chosen_ids"]) for r in b] + [len(r["rejected_ids"]) for r in b]
        tokens += max(lens) * len(lens)
    return (8 if work == "dpo" else 6) * linear_weights(sft) * tokens


# ---------------------------------------------------------------- TRL side (its own process)

def trl_common(a, out: Path, lr: float, warmup: int) -> dict:
    return dict(output_dir=str(out), learning_rate=lr, adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.0,
                lr_scheduler_type="cosine", warmup_steps=warmup, optim=TRL_OPTIM[a.optim], bf16=False,
                gradient_checkpointing=False, use_cpu=True, seed=a.seed, logging_steps=1, save_strategy="no",
                report_to=[], disable_tqdm=True)


TRL_OPTIM = {"fused": "adamw_torch_fused", "plain": "adamw_torch"}


def recording(collate, work: str, seen: list):
    def collate_and_record(features):
        seen.extend(fingerprint(work, f) for f in features)
        return collate(features)
    return collate_and_record


def trl_supervised(work: str, a, sft: str, out: Path) -> dict:
    """SFTTrainer, RewardTrainer or DPOTrainer on this project's token ids, in this project's order."""
    from datasets import Dataset

    rows, cfg = ordered_rows(work, a, sft)
    per, steps = batch_rows(work, a)
    common = trl_common(a, out, cfg.optim.learning_rate, cfg.optim.num_warmup_steps)
    common.update(per_device_train_batch_size=per, max_steps=steps, train_sampling_strategy="sequential")
    seen: list[str] = []
    if work == "sft":
        from trl import SFTConfig, SFTTrainer

        ds = Dataset.from_list([{"input_ids": r["input_ids"],
                                 "labels": [-100] * r["prompt_len"] + r["input_ids"][r["prompt_len"]:]} for r in rows])
        args = SFTConfig(**common, max_length=None, dataset_kwargs={"skip_prepare_dataset": True})
        trainer = SFTTrainer(model=sft, args=args, train_dataset=ds)
    elif work == "rm":
        from trl import RewardConfig, RewardTrainer

        from training.utils.model import load_reward_model, load_tokenizer

        ds = Dataset.from_list([{"chosen_ids": r["chosen_ids"], "rejected_ids": r["rejected_ids"]} for r in rows])
        args = RewardConfig(**common, max_length=None, center_rewards_coefficient=None)
        tok = load_tokenizer(sft)                # the scalar head starts from this project's seeded initialisation
        model = load_reward_model(sft, tok, seed=cfg.optim.seed)
        trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    else:
        from trl import DPOConfig, DPOTrainer

        ds = Dataset.from_list(
            [
                {
                    "prompt_ids": r["chosen_ids"][: r["prompt_len"]],
                    "chosen_ids": r["chosen_ids"][r["prompt_len"] :],
                    "rejected_ids": r["rejected_ids"][r["prompt_len"] :],
                }
                for r in rows
            ]
        )

        class PreTokenized(DPOTrainer):        # the rows are this project's token ids: keep them as they are
            def _prepare_dataset(self, dataset, *args, **kwargs):
                return dataset

        args = DPOConfig(**common, beta=cfg.dpo.beta, max_length=None)
        trainer = PreTokenized(model=sft, args=args, train_dataset=ds)
    trainer.data_collator = recording(trainer.data_collator, work, seen)
    dtype = str(next(trainer.model.parameters()).dtype)
    t0 = time.time()
    trainer.train()
    loop = time.time() - t0
    trainer.save_model(str(out / "actor"))
    trainer.processing_class.save_pretrained(out / "actor")
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {"loop_s": loop, "losses": losses, "rows": seen, "dtype": dtype}


def trl_rl(work: str, a, sft: str, out: Path, curve=None) -> dict:
    """GRPOTrainer or RLOOTrainer with the checker as the reward (less the stage's missing-EOS penalty),
    prompts in this project's order, the stage config's batch shape, epochs, KL, rate and schedule;
    for ``ppo`` (time to quality) GRPOTrainer with the reward model, as ``vs_trl_quality`` describes.
    With ``curve`` the held-out pass-rate is taken every ``--curve-every`` iterations."""
    from datasets import Dataset
    from peft import LoraConfig

    from training.utils.data.checker import reward as checker

    rows, cfg = ordered_rows(work, a, sft)
    ds = Dataset.from_list([{"prompt": r["prompt_text"], "row_prompt_ids": r["prompt_ids"]} for r in rows])
    seen: list[str] = []
    penalty, eos = cfg.rewards.missing_eos_penalty, None

    def checker_reward(prompts, completions, completion_ids, **_):
        seen.extend(fingerprint(work, {"prompt_text": p}) for p in prompts[::a.answers])
        return [
            checker(p, c.strip()) - penalty * (eos not in ids)
            for p, c, ids in zip(prompts, completions, completion_ids)
        ]

    reward = checker_reward
    per_step = a.prompts * a.answers // cfg.rl.loss.per_device_training_batch_size   # optimizer steps per epoch
    epochs = cfg.rl.loss.ppo_epochs
    common = trl_common(a, out, cfg.lora.lora_learning_rate, cfg.optim.num_warmup_steps) | {
        "lr_scheduler_type": cfg.optim.lr_scheduler_type}
    common.update(per_device_train_batch_size=cfg.rl.loss.per_device_training_batch_size, steps_per_generation=per_step,
                  num_generations=a.answers, max_completion_length=a.max_new_tokens,
                  max_steps=a.iterations * per_step * epochs, beta=cfg.rl.kl.kl_coef, num_iterations=epochs,
                  epsilon=cfg.rl.loss.cliprange, temperature=cfg.rl.rollout.temperature, top_p=cfg.rl.rollout.top_p,
                  top_k=cfg.rl.rollout.top_k, shuffle_dataset=False)
    if work == "rloo":
        from trl import RLOOConfig as Config, RLOOTrainer as Trainer

        args = Config(**common, normalize_advantages=False)
    else:
        from trl import GRPOConfig as Config, GRPOTrainer as Trainer

        args = Config(
            **common,
            loss_type="dapo",
            scale_rewards="group" if cfg.rl.algo == "grpo" and cfg.rl.loss.std_normalize else "none",
        )
    if work == "ppo":
        from training.utils.model import load_tokenizer
        from vs_trl_quality import reward_model_fn

        score = reward_model_fn(a.rm, load_tokenizer(sft), penalty)

        def reward_model_reward(prompts, completions, **kw):
            seen.extend(fingerprint(work, {"prompt_text": p}) for p in prompts[::a.answers])
            return score(prompts, completions, **kw)

        reward = reward_model_reward
    lora = LoraConfig(
        r=cfg.lora.lora_dim,
        lora_alpha=cfg.lora.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = Trainer(model=sft, reward_funcs=reward, args=args, train_dataset=ds, peft_config=lora)
    eos = trainer.processing_class.eos_token_id
    if curve is not None:
        from vs_trl_quality import trl_callback

        trainer.add_callback(trl_callback(curve, a.curve_every * per_step * epochs, trainer.processing_class))
    dtype = str(next(trainer.model.parameters()).dtype)
    phases = {"generation_s": 0.0, "experience_s": 0.0}

    def timing(fn, key):                       # TRL's own methods, timed where they are called
        def timed_call(*args, **kwargs):
            t = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[key] += time.time() - t
        return timed_call

    trainer._generate = timing(trainer._generate, "generation_s")
    trainer._generate_and_score_completions = timing(trainer._generate_and_score_completions, "experience_s")
    t0 = time.time()
    trainer.train()
    loop = time.time() - t0
    phases["experience_s"] -= phases["generation_s"]           # scoring and log-probs around the generation
    phases["train_s"] = loop - phases["generation_s"] - phases["experience_s"]
    model = trainer.model.merge_and_unload()
    model.save_pretrained(out / "actor")
    trainer.processing_class.save_pretrained(out / "actor")
    return {"loop_s": loop, "rows": seen, "dtype": dtype, **phases}


# ---------------------------------------------------------------- this project's side

def ours(work: str, a, sft: str, out: Path) -> list[str]:
    """This project's stage command line (run through ``ours_process``, which records its rows)."""
    return [sys.executable, str(Path(__file__).resolve()), "--ours-side", work, "--ours-out", str(out), "--",
            str(ROOT / SCRIPTS[work]), "--config", str(ROOT / "training/configs" / CONFIGS[work]),
            "--model_name_or_path", sft, "--output_dir", str(out), "--overwrite", "--eval_interval", "0",
            "--eval_at_start", "false", "--final_eval", "false", "--plots", "false", "--disable_tqdm", "true",
            *shared_flags(a)[work], *a.ours_flags]


def ours_process(work: str, out: Path, argv: list[str], curve=None) -> None:
    """Run the stage script ``argv[0]`` in this process, recording the rows its shuffled (training)
    loaders hand to their collate function, into ``out/rows.json`` (and ``curve``'s points, its
    evaluations replacing the stage's own, into ``out/curve.json``)."""
    import runpy

    import training.utils.loop as loop

    if curve is not None:
        from vs_trl_quality import patch_ours

        patch_ours(curve)

    seen: list[str] = []
    plain = loop.make_loader

    def make_loader(ds, batch_size, collate, shuffle, seed, num_workers=0):
        return plain(ds, batch_size, recording(collate, work, seen) if shuffle else collate, shuffle, seed, num_workers)

    loop.make_loader = make_loader
    sys.argv = list(argv)
    try:
        runpy.run_path(argv[0], run_name="__main__")
    finally:
        (out / "rows.json").write_text(json.dumps(seen) + "\n")
        if curve is not None:
            (out / "curve.json").write_text(json.dumps(curve.points) + "\n")


def our_result(work: str, out: Path) -> dict:
    from training.utils.logging import read_metrics

    rows = read_metrics(out / "metrics.jsonl")
    timing = [r for r in rows if r["split"] == "time"][-1]
    res = {"loop_s": timing["train_loop_s"], "rows": json.loads((out / "rows.json").read_text())}
    train = [r for r in rows if r["split"] == "train"]
    if work in RL:
        for k in ("generation_s", "experience_s", "train_s"):
            res[k] = sum(r[k] for r in train)
    else:
        res["losses"] = [r["loss"] for r in train]
    return res


# ---------------------------------------------------------------- the run

def timed(cmd: list[str], log: Path) -> float:
    t0 = time.time()
    with open(log, "w") as fh:
        rc = subprocess.run(
            cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)}
        ).returncode
    if rc != 0:
        sys.exit(f"{' '.join(cmd[:4])} ... failed (exit {rc}); see {log}")
    return time.time() - t0


def pass_rate(model_dir: Path, n: int) -> float:
    from inference.passrate import eval_prompts, evaluate_model

    return evaluate_model(str(model_dir), max_new_tokens=64, batch_size=32, prompts=eval_prompts("dev", n))["pass_rate"]


def sft_model(a, out: Path) -> str:
    if a.sft:
        return a.sft
    run = out / "sft"
    model = run / "actor-models" / "smollm2-135m"
    if not (model / "summary.json").is_file():
        print(f"training the starting SFT model into {run} (once)", flush=True)
        timed(
            [sys.executable, "train.py", "--step", "1", "--output-dir", str(run), "--seed", str(a.seed)],
            out / "sft.log",
        )
    return str(model)


def same_rows(work: str, run: dict, n: int) -> None:
    """Stop unless both sides trained on the same ``n`` rows in the same order."""
    ours_rows, trl_rows = run["ours"]["rows"][:n], run["trl"]["rows"][:n]
    if len(ours_rows) < n or ours_rows != trl_rows:
        first = next(
            (i for i, (x, y) in enumerate(zip(ours_rows, trl_rows)) if x != y), min(len(ours_rows), len(trl_rows))
        )
        sys.exit(f"{work}: the two sides did not train on the same rows (this project {len(ours_rows)}, TRL "
                 f"{len(trl_rows)} of {n}; first difference at row {first})")
    run["rows_checked"] = n


def spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--work", nargs="*", default=list(WORKS), choices=WORKS, help="stage works to time (none: --work)")
    ap.add_argument("--runs", type=int, default=3, help="alternating pairs per work (this project first in odd pairs)")
    ap.add_argument("--sft", default="", help="starting model (default: train one with stage 1 into <out>/sft)")
    ap.add_argument("--out", default="bench-out/vs_trl")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--optim", choices=tuple(TRL_OPTIM), default="fused",
                    help="the AdamW both sides use: torch's fused CPU kernel (TRL's default) or the plain one")
    ap.add_argument("--sft-steps", type=int, default=16)
    ap.add_argument("--sft-rows", type=int, default=8)
    ap.add_argument("--rm-steps", type=int, default=16)
    ap.add_argument("--rm-pairs", type=int, default=8)
    ap.add_argument("--dpo-steps", type=int, default=16)
    ap.add_argument("--dpo-pairs", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--answers", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--eval-prompts", type=int, default=96, help="held-out prompts for the pass-rate (0: skip)")
    ap.add_argument("--eval-pairs", type=int, default=1, help="pairs whose models are evaluated (SFT, DPO, GRPO, RLOO)")
    ap.add_argument("--quality", nargs="*", default=list(QUALITY), choices=QUALITY,
                    help="time-to-quality works (vs_trl_quality.py; none: --quality)")
    ap.add_argument("--quality-seeds", type=int, default=3, help="seeds per side for the time to quality")
    ap.add_argument("--quality-iterations", type=int, default=0,
                    help="iterations of each time-to-quality run (default: its preset's)")
    ap.add_argument("--quality-points", type=int, default=4, help="pass-rate points per run, evenly spaced")
    ap.add_argument("--rm", default="", help="reward model for the ppo time to quality (default: the main job's "
                    "stage 2 trained beside the starting SFT model, once)")
    ap.add_argument("--summarize", action="store_true",
                    help="only rebuild the table of <out>/vs_trl.json (adds the FLOP rates) without running anything")
    ap.add_argument("--sides", nargs="+", default=["ours", "trl"], choices=("ours", "trl"))
    ap.add_argument("--ours-flags", nargs=argparse.REMAINDER, default=[],
                    help="extra flags for this project's stage (e.g. --share_prompt_forward false), last")
    ap.add_argument("--trl-side", choices=WORKS + QUALITY, help=argparse.SUPPRESS)   # the TRL process itself
    ap.add_argument("--trl-out", help=argparse.SUPPRESS)
    ap.add_argument("--curve-every", type=int, default=0, help=argparse.SUPPRESS)   # pass-rate points (iterations)
    ap.add_argument("--ours-side", choices=WORKS + QUALITY, help=argparse.SUPPRESS)  # this project's process itself
    ap.add_argument("--ours-out", help=argparse.SUPPRESS)
    return ap.parse_known_args(argv)


def work_args(a) -> list[str]:
    return ["--seed", str(a.seed), "--optim", a.optim, "--sft-steps", str(a.sft_steps), "--sft-rows", str(a.sft_rows),
            "--rm-steps", str(a.rm_steps), "--rm-pairs", str(a.rm_pairs), "--dpo-steps", str(a.dpo_steps),
            "--dpo-pairs", str(a.dpo_pairs), "--iterations", str(a.iterations), "--prompts", str(a.prompts),
            "--answers", str(a.answers), "--max-new-tokens", str(a.max_new_tokens)]


def main(argv=None) -> dict:
    a, rest = parse(argv)
    curve = Curve(a.eval_prompts) if a.curve_every else None
    if a.ours_side:                              # inside this project's process
        return ours_process(a.ours_side, Path(a.ours_out), rest[1:] if rest[:1] == ["--"] else rest, curve)
    if rest:
        sys.exit(f"unrecognized arguments: {' '.join(rest)}")
    if a.trl_side:                               # inside the TRL process
        out = Path(a.trl_out)
        if a.trl_side in RL:
            res = trl_rl(a.trl_side, a, a.sft, out, curve)
        else:
            res = trl_supervised(a.trl_side, a, a.sft, out)
        if curve is not None:
            res["points"] = curve.points
        (out / "trl_result.json").write_text(json.dumps(res) + "\n")
        return res
    out = Path(a.out).resolve()
    if a.summarize:
        results = json.loads((out / "vs_trl.json").read_text())
        return finish(results, parse(results["settings"])[0], out)
    out.mkdir(parents=True, exist_ok=True)
    sft = sft_model(a, out)
    import torch
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "cpu_threads": torch.get_num_threads(), "optim": a.optim}
    try:
        import trl
        versions["trl"] = trl.__version__
    except ImportError:
        if "trl" in a.sides:
            sys.exit("TRL is not installed: pip install -r requirements-bench.txt")
    results: dict = {"versions": versions, "sft": sft, "settings": work_args(a), "runs": {}}
    earlier = out / "vs_trl.json"
    if earlier.is_file():                        # the works not run now keep their pairs from the same settings
        before = json.loads(earlier.read_text())
        if before.get("settings") == results["settings"] and before.get("sft") == sft:
            results["runs"] = {w: r for w, r in before["runs"].items() if w not in a.work}
            results["ratios"] = {w: r for w, r in before.get("ratios", {}).items() if w not in a.work}
            results.update({k: before[k] for k in ("sft_pass_rate", "eval_prompts") if k in before})
            if not a.quality and "quality" in before:           # and the time to quality, when not run now
                results["quality"] = before["quality"]
    for work in a.work:
        runs = results["runs"][work] = []
        per, steps = batch_rows(work, a)
        for r in range(a.runs):
            run: dict = {"order": list(a.sides) if r % 2 == 0 else list(reversed(a.sides))}
            for side in run["order"]:
                d = out / f"{work}-{side}-{r}"
                d.mkdir(parents=True, exist_ok=True)
                print(f"{work} pair {r + 1}/{a.runs}: {side} ...", flush=True)
                if side == "ours":
                    wall = timed(ours(work, a, sft, d), d / "process.log")
                    res = our_result(work, d)
                    model = d / ("actor" if work in RL else "")
                else:
                    wall = timed([sys.executable, __file__, "--sft", sft, *work_args(a), "--trl-side", work,
                                  "--trl-out", str(d)], d / "process.log")
                    res = json.loads((d / "trl_result.json").read_text())
                    model = d / "actor"
                    if res["dtype"] != "torch.float32":
                        sys.exit(f"{work}: TRL trained in {res['dtype']}, not fp32")
                res["process_s"] = wall
                n = samples(work, a)
                res["samples_per_s_loop"], res["samples_per_s_process"] = n / res["loop_s"], n / wall
                if a.eval_prompts and r < a.eval_pairs and work != "rm":
                    res["pass_rate"] = pass_rate(model, a.eval_prompts)
                run[side] = res
                print(f"  {side}: loop {res['loop_s']:.1f} s, process {wall:.1f} s"
                      + (f", pass-rate {res['pass_rate']:.3f}" if "pass_rate" in res else ""), flush=True)
            if "ours" in run and "trl" in run:
                same_rows(work, run, per * steps)
                run["ratio_loop"] = run["trl"]["loop_s"] / run["ours"]["loop_s"]
                run["ratio_process"] = run["trl"]["process_s"] / run["ours"]["process_s"]
                if run["ours"].get("losses") and run["trl"].get("losses"):
                    run["max_loss_diff"] = max(abs(x - y) for x, y in zip(run["ours"]["losses"], run["trl"]["losses"]))
            runs.append(run)
        pairs = [r for r in runs if "ratio_loop" in r]
        if pairs:
            results.setdefault("ratios", {})[work] = {"loop": spread([r["ratio_loop"] for r in pairs]),
                                                      "process": spread([r["ratio_process"] for r in pairs])}
        (out / "vs_trl.json").write_text(json.dumps(results, indent=2) + "\n")
    if a.eval_prompts:
        results["sft_pass_rate"] = pass_rate(Path(sft), a.eval_prompts)
        results["eval_prompts"] = a.eval_prompts
        if a.quality:
            results["quality"] = quality(sys.modules[__name__], a, sft, out, results["sft_pass_rate"])
    return finish(results, a, out)


def finish(results: dict, a, out: Path) -> dict:
    """Add each supervised loop's model FLOP/s and its fraction of this machine's matmul rate, write
    ``vs_trl.json`` and ``vs_trl.md``, print the table."""
    from machine import probe

    results["machine"] = probe()
    for work, runs in results["runs"].items():
        if work in RL or not runs:
            continue
        flops = results.setdefault("flops", {})[work] = loop_flops(work, a, results["sft"])
        for run in runs:
            for side in ("ours", "trl"):
                if side in run:
                    run[side]["gflops_loop"] = flops / run[side]["loop_s"] / 1e9
                    run[side]["matmul_fraction"] = run[side]["gflops_loop"] / results["machine"]["matmul_gflops"]
    (out / "vs_trl.json").write_text(json.dumps(results, indent=2) + "\n")
    md = table(results)
    if results.get("quality"):
        from vs_trl_quality import plot, table as quality_table

        plot(results["quality"], out / "time_to_quality.png")
        md += "\n\n" + quality_table(results["quality"]) + f"\n\nplot: {out / 'time_to_quality.png'}"
    (out / "vs_trl.md").write_text(md + "\n")
    print(md)
    return results


if __name__ == "__main__":
    main()
