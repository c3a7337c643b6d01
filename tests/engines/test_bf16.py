"""bf16 end to end on CPU (DeepSpeed's bf16 on the CPU accelerator) and the fp16 configs a GPU runs.

bf16 paths are compared with fp32 by logits, not by greedy tokens (a near-tie can flip in bf16).
TOL is the stated tolerance: bf16 keeps 8 bits of mantissa, so logits of magnitude ~1 on these
models differ from fp32 by up to ~0.005 (measured on tiny and tiny-opt); TOL allows 4x that.
"""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.utils.arguments import parse_config

ROOT = Path(__file__).resolve().parents[2]


TOL = 0.02


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tiny", "tiny-opt"])
def test_hybrid_engine_bf16_rollout_against_fp32_logits(tiny_tok, kind):
    from training.utils.deepspeed_setup import build_train_engine
    from training.utils.distributed import init_distributed
    from training.utils.generation import GenerationSettings
    from training.utils.hybrid_engine import HybridEngine
    from training.utils.model import load_causal_lm

    init_distributed()
    model = load_causal_lm(kind, tiny_tok, seed=5)
    fp32 = copy.deepcopy(model).eval()
    engine = build_train_engine(model, parse_config(["--zero_stage", "3", "--dtype", "bf16",
                                                     "--per_device_train_batch_size", "2"]), 1)
    assert next(engine.module.parameters()).dtype == torch.bfloat16
    x = torch.randint(10, 1000, (2, 6), generator=torch.Generator().manual_seed(0))
    seq = HybridEngine(engine, tiny_tok, 3).generate(x, torch.ones_like(x), GenerationSettings(
        max_new_tokens=8, min_new_tokens=8, do_sample=False))
    engine.eval()
    with torch.no_grad():
        want = fp32(input_ids=seq).logits[:, 5:-1].float()
        got = engine.module(input_ids=seq).logits[:, 5:-1].float()       # the bf16 engine, ZeRO-3 hooks on
    assert (got - want).abs().max().item() < TOL
    # each greedy choice of the bf16 rollout is fp32's argmax or within TOL of it
    chosen = want.gather(-1, seq[:, 6:].unsqueeze(-1)).squeeze(-1)
    assert (want.max(-1).values - chosen).max().item() < TOL


def _common(tmp_path):
    return ["--data_output_path", str(tmp_path / "cache"), "--bundled_size", "300", "--max_seq_len", "96",
            "--max_prompt_seq_len", "64", "--max_steps", "2", "--max_eval_samples", "4", "--dtype", "bf16",
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--disable_tqdm",
            "--plots", "false", "--enable_tensorboard", "false"]


@pytest.mark.slow
def test_bf16_pipeline_sft_reward_ppo_zero3_and_chat(tmp_path):
    from training.step1_supervised_finetuning.main import main as sft
    from training.step2_reward_model_finetuning.main import main as rm
    from training.step3_rlhf_finetuning.main import main as rl
    from training.utils.model import load_causal_lm, load_tokenizer

    c = _common(tmp_path)
    sft(c + ["--model_name_or_path", "tiny", "--output_dir", str(tmp_path / "sft")])
    rm(c + ["--model_name_or_path", "tiny", "--output_dir", str(tmp_path / "rm")])
    out = rl(c + ["--model_name_or_path", str(tmp_path / "sft"), "--reward_model_name_or_path", str(tmp_path / "rm"),
                  "--output_dir", str(tmp_path / "ppo"), "--zero_stage", "3", "--max_answer_seq_len", "8",
                  "--per_device_generation_batch_size", "4"])
    for d in ("sft", "rm", "ppo"):
        s = json.loads((tmp_path / d / "summary.json").read_text())
        assert s["final_eval"] and all(v == v for v in s["final_eval"].values() if isinstance(v, float))   # no NaN
        assert "dtype=bf16" in (tmp_path / d / "training.log").read_text()      # every engine built in bf16
    assert json.loads((tmp_path / "ppo" / "training_config.json").read_text())["ds"]["dtype"] == "bf16"
    assert out["final"]["response_length"] > 0
    # the trained actor, loaded in bf16 and in fp32: logits agree within TOL
    actor, tok = tmp_path / "ppo" / "actor", load_tokenizer(str(tmp_path / "ppo" / "actor"))
    x = torch.randint(10, 1000, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = load_causal_lm(str(actor), tok, dtype=torch.bfloat16)(input_ids=x).logits.float()
        b = load_causal_lm(str(actor), tok)(input_ids=x).logits
    assert (a - b).abs().max().item() < TOL
    r = subprocess.run([sys.executable, str(ROOT / "chat.py"), "--model", str(actor), "--dtype", "bf16", "--prompt",
                        "Say hi", "--max_new_tokens", "6", "--greedy"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Assistant:" in r.stdout, r.stderr[-2000:]
    r = subprocess.run([sys.executable, str(ROOT / "chat.py"), "--model", str(actor), "--dtype", "fp16", "--device",
                        "cpu", "--prompt", "x"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--dtype fp16: dtype fp16 is not supported on CPU" in r.stderr
