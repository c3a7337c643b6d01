"""Reliability: SIGKILL mid-stage and --resume, damaged checkpoints, non-finite losses/rewards."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.step1_supervised_finetuning.main import main as sft_main
from training.step2_reward_model_finetuning.main import main as rm_main
from training.step3_rlhf_finetuning.main import main as rl_main
from training.utils import checkpoint
from training.utils.logging import read_metrics
from training.utils.loop import NumericFault

ROOT = Path(__file__).resolve().parents[2]


SCRIPTS = {
    "sft": "training/step1_supervised_finetuning/main.py",
    "rm": "training/step2_reward_model_finetuning/main.py",
    "ppo": "training/step3_rlhf_finetuning/main.py",
    "curriculum": "training/step3_rlhf_finetuning/main.py",
    "multiturn": "training/step3_rlhf_finetuning/main.py",
    "vllm": "training/step3_rlhf_finetuning/main.py",
}


MAINS = {"sft": sft_main, "rm": rm_main, "ppo": rl_main, "curriculum": rl_main, "multiturn": rl_main, "vllm": rl_main}


RL = ("ppo", "curriculum", "multiturn", "vllm")


COMMON = ["--bundled_size", "300", "--max_seq_len", "96", "--max_prompt_seq_len", "64", "--max_eval_samples", "4",
          "--per_device_eval_batch_size", "4", "--disable_tqdm", "--plots", "false", "--seed", "5",
          "--enable_tensorboard", "false"]


def stage_args(kind, tmp_path, out, rm_dir=None):
    cache = ["--data_output_path", str(tmp_path / "cache"), "--output_dir", str(out)]
    if kind == "sft":
        return (
            COMMON
            + cache
            + [
                "--model_name_or_path",
                "tiny",
                "--per_device_train_batch_size",
                "4",
                "--max_steps",
                "6",
                "--learning_rate",
                "1e-3",
                "--dropout",
                "0.1",
                "--save_interval",
                "2",
            ]
        )
    if kind == "rm":
        return (
            COMMON
            + cache
            + [
                "--model_name_or_path",
                "tiny",
                "--per_device_train_batch_size",
                "2",
                "--max_steps",
                "6",
                "--learning_rate",
                "1e-3",
                "--gradient_accumulation_steps",
                "2",
                "--save_interval",
                "2",
            ]
        )
    rl = COMMON + cache + ["--actor_model_name_or_path", "tiny", "--reward_model_name_or_path", rm_dir,
                           "--max_answer_seq_len", "8", "--per_device_generation_batch_size", "4",
                           "--per_device_training_batch_size", "2", "--max_steps", "5", "--learning_rate", "1e-3",
                           "--critic_learning_rate", "1e-3", "--save_interval", "2", "--enable_ema", "--adaptive_kl",
                           "--normalize_reward", "--dropout", "0.1"]
    if kind == "curriculum":       # prompts drawn by the spread of their answers: the draws resume too
        rl += ["--num_samples_per_prompt", "2", "--group_baseline", "--prompt_curriculum", "--balance_key", "task"]
    if kind == "multiturn":        # two-turn rollouts: every turn calls a tool and ends at a common letter
        rl += ["--tools", "calltools:ping", "--tool_parser", "calltools:always_call", "--max_turns", "2",
               "--turn_stop", " ", "e", "a", "o", "i", "\n"]
    if kind == "vllm":             # rollouts sampled by vLLM (in-process: the run's torch generator)
        rl = [a if a != "tiny" else "tiny-h32" for a in rl] + ["--rollout_engine", "vllm", "--vllm_kv_cache_gb", "0.05"]
    return rl


def weights(out: Path, kind: str) -> dict:
    rl = kind in RL
    d = out / "actor" if rl else out
    w = load_file(str(d / "model.safetensors"))
    if rl:
        w.update({"critic." + k: v for k, v in load_file(str(out / "critic" / "model.safetensors")).items()})
        w.update({"ema." + k: v for k, v in load_file(str(out / "actor_ema" / "model.safetensors")).items()})
    return w


def killed_run(kind, args, kill_after, path=""):
    dist = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in dist}      # set by this process's own runs
    if path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
    r = subprocess.run([sys.executable, str(ROOT / SCRIPTS[kind]), *args, "--fault", f"kill_after={kill_after}"],
                       cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == -9, r.stdout[-2000:] + r.stderr[-2000:]          # SIGKILL


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, tiny_tok):
    from training.utils.model import load_reward_model, save_hf

    d = tmp_path_factory.mktemp("rm") / "tiny-rm"
    save_hf(load_reward_model("tiny", tiny_tok, seed=2), tiny_tok, d)
    return str(d)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sft", "rm", "ppo", "curriculum", "multiturn", "vllm"])
def test_sigkill_mid_stage_then_resume_gives_the_uninterrupted_weights(tmp_path, kind, rm_dir, monkeypatch):
    from support.multiturn import RULES

    full, cut = tmp_path / "full", tmp_path / "cut"
    (tmp_path / "calltools.py").write_text(RULES)
    monkeypatch.syspath_prepend(str(tmp_path))
    MAINS[kind](stage_args(kind, tmp_path, full, rm_dir))
    killed_run(kind, stage_args(kind, tmp_path, cut, rm_dir), kill_after=3, path=str(tmp_path))
    assert [s for s, _ in checkpoint.list_checkpoints(cut)] == [2]            # killed after step 3
    assert not (cut / "summary.json").exists()
    MAINS[kind](stage_args(kind, tmp_path, cut, rm_dir) + ["--resume"])
    a, b = weights(full, kind), weights(cut, kind)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # one metrics record per step across the two runs (the killed run's step 3 was redone), and the
    # same numbers as the uninterrupted run
    key = "reward" if kind in RL else "loss"
    la = [(r["step"], r[key]) for r in read_metrics(full / "metrics.jsonl") if r["split"] == "train"]
    lb = [(r["step"], r[key]) for r in read_metrics(cut / "metrics.jsonl") if r["split"] == "train"]
    assert la == lb and len(la) == (5 if key == "reward" else 6)
    if kind == "multiturn":      # the rollouts had second turns (calls answered) before and after the kill
        turns = [r["turns_per_rollout"] for r in read_metrics(cut / "metrics.jsonl") if r["split"] == "train"]
        assert len(turns) == 5 and all(t > 1.0 for t in turns), turns
    if kind == "vllm":           # vLLM sampled them, synced after every iteration's updates
        rows = [r for r in read_metrics(full / "metrics.jsonl") if r["split"] == "train"]
        assert all(r["vllm_sync_s"] > 0 for r in rows[1:]) and all(r["logprob_gap_mean"] < 1e-3 for r in rows)


@pytest.mark.slow
def test_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    full, cut = tmp_path / "full", tmp_path / "cut"
    sft_main(stage_args("sft", tmp_path, full))
    killed_run("sft", stage_args("sft", tmp_path, cut), kill_after=5)
    ckpts = checkpoint.list_checkpoints(cut)
    assert [s for s, _ in ckpts] == [2, 4]
    newest = ckpts[-1][1]
    victim = max((p for p in newest.rglob("*") if p.is_file() and p.suffix == ".pt"), key=lambda p: p.stat().st_size)
    with open(victim, "r+b") as fh:
        fh.truncate(victim.stat().st_size // 2)
    assert "bytes, the manifest says" in checkpoint.verify(newest)
    assert checkpoint.latest(cut) == ckpts[0][1]
    sft_main(stage_args("sft", tmp_path, cut) + ["--resume"])
    log = (cut / "training.log").read_text()
    assert "is not usable" in log and "resumed from" in log and "step-00000002 (step 2)" in log
    a, b = weights(full, "sft"), weights(cut, "sft")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_non_finite_loss_is_skipped_then_too_many_stop_the_run(tmp_path):
    out = tmp_path / "once"
    sft_main(stage_args("sft", tmp_path, out) + ["--fault", "nan_at=3"])
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    assert len(train) == 6 and train[-1]["nonfinite_skipped"] == 1 and train[0]["nonfinite_skipped"] == 0
    assert "non-finite loss at step 3: update skipped" in (out / "training.log").read_text()
    out = tmp_path / "stop"
    with pytest.raises(NumericFault, match=r"3 non-finite values in a row .* Last good checkpoint: .*step-00000004"):
        sft_main(stage_args("sft", tmp_path, out) + ["--fault", "nan_at=5:6:7"])
    assert checkpoint.latest(out) is not None and not (out / "model.safetensors").exists()


@pytest.mark.slow
def test_non_finite_reward_skips_the_iteration(tmp_path, rm_dir):
    out = tmp_path / "ppo"
    rl_main(
        stage_args("ppo", tmp_path, out, rm_dir) + ["--max_steps", "3", "--save_interval", "0", "--fault", "nan_at=2"]
    )
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    assert [r.get("skipped_updates", 0.0) for r in train] == [0.0, 1.0, 0.0]
    assert train[-1]["nonfinite_skipped"] == 1


@pytest.mark.slow
def test_two_rank_kill_and_resume_through_train_py(tmp_path):
    args = [sys.executable, str(ROOT / "train.py"), "--step", "1", "--actor-model", "tiny", "--deployment-type",
            "single_node", "--num-processes", "2", "--data_output_path", str(tmp_path / "cache"), "--save_interval",
            "2", "--max_steps", "6", "--dropout", "0.1", "--plots", "false", "--eval-prompts", "4"]
    dist = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in dist}
    run = lambda out, *extra, **kw: subprocess.run(args + ["--output-dir", str(tmp_path / out), *extra], cwd=ROOT,
                                                   capture_output=True, text=True, env={**env, **kw})
    r = run("full")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = run("cut", "--fault", "kill_after=3")
    assert r.returncode != 0 and "stage 1 failed" in r.stderr
    stage = tmp_path / "cut" / "actor-models" / "tiny"
    assert [s for s, _ in checkpoint.list_checkpoints(stage)] == [2]
    assert {p.name for p in (stage / "checkpoints" / "step-00000002").glob("rng-rank*.pt")} == {
        "rng-rank0.pt",
        "rng-rank1.pt",
    }
    r = run("cut", "--resume")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    a = load_file(str(tmp_path / "full" / "actor-models" / "tiny" / "model.safetensors"))
    b = load_file(str(stage / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    sums = json.loads((stage / "summary.json").read_text())["rank_param_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
