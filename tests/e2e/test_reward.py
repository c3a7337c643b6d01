import json

import pytest
import torch
from support.reward import _batch

from training.step2_reward_model_finetuning.main import main as rm_main
from training.utils.arguments import parse_config
from training.utils.deepspeed_setup import build_train_engine
from training.utils.distributed import init_distributed
from training.utils.logging import read_metrics
from training.utils.model import ValueModel, end_scores, load_reward_model


def _args(tmp_path, name, *extra):
    return ["--model_name_or_path", "tiny", "--output_dir", str(tmp_path / name), "--data_output_path",
            str(tmp_path / "cache"), "--bundled_size", "400", "--max_seq_len", "96", "--max_prompt_seq_len", "64",
            "--per_device_train_batch_size", "4", "--max_steps", "6", "--learning_rate", "1e-3",
            "--max_eval_samples", "16", "--disable_tqdm", "--plots", "false", "--seed", "5", *extra]


@pytest.mark.slow
def test_zero3_save_load_gives_same_scores(tmp_path, tiny_tok):
    from transformers import AutoModelForSequenceClassification

    from inference.rw_eval import Scorer
    from training.utils.model import save_hf

    init_distributed()
    cfg = parse_config(["--zero_stage", "3", "--learning_rate", "1e-2", "--per_device_train_batch_size", "2"])
    model = load_reward_model("tiny", tiny_tok, seed=3)
    engine = build_train_engine(ValueModel(model), cfg, total_steps=2)
    b = _batch(tiny_tok)
    values = engine(b["input_ids"], b["attention_mask"])  # one step so the weights move off the init
    loss = -torch.nn.functional.logsigmoid(
        end_scores(values, b["end_index"])[:2] - end_scores(values, b["end_index"])[2:]
    ).mean()
    engine.backward(loss)
    engine.step()
    engine.eval()
    with torch.no_grad():
        live = end_scores(engine(b["input_ids"], b["attention_mask"]), b["end_index"])
    save_hf(engine.module.model, tiny_tok, tmp_path / "rm", zero_stage=3)
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    with torch.no_grad():
        again = end_scores(ValueModel(hf)(b["input_ids"], b["attention_mask"]), b["end_index"])
    assert torch.allclose(live, again, atol=1e-5)
    assert hf.config.num_labels == 1
    scorer = Scorer(str(tmp_path / "rm"))
    assert scorer.tok.pad_token_id == tiny_tok.pad_token_id
    pairs = [("Compute 2 + 2. Reply with the number only.", "4"), ("Say hi.", "Hello there, how are you today?")]
    batched = scorer.score(pairs)
    alone = [scorer.score([p])[0] for p in pairs]
    assert batched == pytest.approx(alone, abs=1e-5)  # padding does not move a score


@pytest.mark.slow
def test_reward_stage_end_to_end_zero2_lora_per_token(tmp_path):
    # ZeRO-2 on pairs it trains on: accuracy and margin on them must rise (bundled pairs on a random tiny
    # model move by noise in 6 steps, so they cannot tell training from no training)
    memorise = ["--data_path", _memorise_dir(tmp_path), "--data_split", "0,1,0", "--dedup", "false"]
    final = rm_main(_args(tmp_path, "rm", "--zero_stage", "2", "--num_train_epochs", "3", *memorise))
    assert set(final) >= {"acc", "chosen_score", "rejected_score", "margin"}
    evals = [r for r in read_metrics(tmp_path / "rm" / "metrics.jsonl") if r["split"] == "eval"]
    assert evals[-1]["step"] == 6 and evals[-1]["acc"] > evals[0]["acc"] + 0.2, (evals[0], evals[-1])
    assert evals[-1]["margin"] > evals[0]["margin"] + 0.1
    # per-token loss through LoRA on pairs it trains on: the eval margin must grow from where it starts
    final2 = rm_main(_args(tmp_path, "rm_lora", "--lora_dim", "4", "--only_optimize_lora", "--rm_loss", "per_token",
                           "--lora_learning_rate", "2e-2", "--num_train_epochs", "3",
                           *memorise))
    evals2 = [r for r in read_metrics(tmp_path / "rm_lora" / "metrics.jsonl") if r["split"] == "eval"]
    assert evals2[0]["step"] == 0 and final2["margin"] > evals2[0]["margin"] + 0.1, (evals2[0], final2)
    summary = json.loads((tmp_path / "rm_lora" / "summary.json").read_text())
    assert summary["stage"] == "reward" and summary["steps"] == 6


def _memorise_dir(tmp_path):
    """Train and eval files with the same pairs: training must move the eval numbers."""
    d = tmp_path / "pairs"
    d.mkdir()
    rows = [{"prompt": f"Compute {i} + {i}. Reply with the number only.", "chosen": str(2 * i),
             "rejected": str(2 * i + 1)} for i in range(8)]
    for name in ("train.jsonl", "eval.jsonl"):
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(d)


@pytest.mark.slow
def test_dpo_end_to_end_tiny_zero3_and_ipo(tmp_path):
    from transformers import AutoModelForCausalLM

    from training.step2_reward_model_finetuning.dpo_main import main as dpo_main

    data = ["--data_path", _memorise_dir(tmp_path), "--data_split", "0,1,0", "--dedup", "false"]
    final = dpo_main(_args(tmp_path, "dpo", "--zero_stage", "3", "--beta", "0.5", *data))
    evals = [r for r in read_metrics(tmp_path / "dpo" / "metrics.jsonl") if r["split"] == "eval"]
    # at step 0 policy == reference: every implicit reward is 0 and the loss is log 2
    assert evals[0]["loss"] == pytest.approx(0.6931, abs=1e-3) and evals[0]["reward_margin"] == pytest.approx(
        0, abs=1e-4
    )
    assert final["loss"] < evals[0]["loss"] and final["reward_margin"] > 0 and final["reward_acc"] > 0.5
    AutoModelForCausalLM.from_pretrained(tmp_path / "dpo")
    ipo = dpo_main(_args(tmp_path, "ipo", "--dpo_loss", "ipo", "--lora_dim", "4", *data))
    first = [r for r in read_metrics(tmp_path / "ipo" / "metrics.jsonl") if r["split"] == "eval"][0]
    assert first["loss"] == pytest.approx((1 / (2 * 0.1)) ** 2, abs=1e-3)    # h = 0 at step 0, beta 0.1
    assert ipo["loss"] < first["loss"] - 1.0


@pytest.mark.slow
def test_one_rank_zero0_skips_deepspeeds_gradient_reduce_and_trains_the_same_weights(tiny_tok):
    init_distributed()
    cfg = parse_config(["--learning_rate", "1e-2", "--per_device_train_batch_size", "2",
                        "--gradient_accumulation_steps", "2"])
    b = _batch(tiny_tok)
    weights = []
    for reduce in (True, False):
        engine = build_train_engine(ValueModel(load_reward_model("tiny", tiny_tok, seed=3)), cfg, total_steps=2)
        assert engine.enable_backward_allreduce is False          # one rank, ZeRO-0: skipped
        engine.enable_backward_allreduce = reduce                 # DeepSpeed's own flatten / reduce / copy
        for _ in range(4):                                        # 2 optimizer steps of 2 accumulated micro-batches
            s = end_scores(engine(b["input_ids"], b["attention_mask"]), b["end_index"])
            engine.backward(-torch.nn.functional.logsigmoid(s[:2] - s[2:]).mean())
            engine.step()
        weights.append(torch.cat([p.detach().flatten().clone() for p in engine.module.parameters()]))
    start = torch.cat(
        [p.detach().flatten() for p in ValueModel(load_reward_model("tiny", tiny_tok, seed=3)).parameters()]
    )
    assert (weights[0] - start).abs().max() > 1e-3                # the steps moved the weights
    assert torch.equal(weights[0], weights[1])  # and moved them identically
    zero1 = build_train_engine(
        ValueModel(load_reward_model("tiny", tiny_tok, seed=3)), parse_config(["--zero_stage", "1"]), 1
    )
    assert zero1.enable_backward_allreduce is True                # a ZeRO optimizer keeps DeepSpeed's path
