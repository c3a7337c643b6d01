import pytest
import torch

from training.step3_rlhf_finetuning.main import main as ppo_main
from training.utils.logging import read_metrics


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory, tiny_tok):
    from training.utils.model import load_reward_model, save_hf

    d = tmp_path_factory.mktemp("rm") / "tiny-rm"
    save_hf(load_reward_model("tiny", tiny_tok, seed=2), tiny_tok, d)
    return str(d)


def _args(tmp_path, name, rm, *extra):
    return ["--actor_model_name_or_path", "tiny", "--reward_model_name_or_path", rm,
            "--output_dir", str(tmp_path / name), "--data_output_path", str(tmp_path / "cache"),
            "--bundled_size", "300", "--max_seq_len", "96", "--max_prompt_seq_len", "64",
            "--max_answer_seq_len", "8", "--per_device_generation_batch_size", "4",
            "--per_device_training_batch_size", "2", "--per_device_eval_batch_size", "4", "--max_steps", "3",
            "--learning_rate", "1e-3", "--critic_learning_rate", "1e-3", "--max_eval_samples", "4",
            "--disable_tqdm", "--plots", "false", "--seed", "3", *extra]


@pytest.mark.slow
def test_ppo_tiny_all_options(tmp_path, tiny_rm):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    res = ppo_main(_args(tmp_path, "ppo", tiny_rm, "--enable_ema", "--ema_decay", "0.5", "--unsup_coef", "0.5",
                         "--adaptive_kl", "--normalize_reward", "--critic_warmup_steps", "1",
                         "--missing_eos_penalty", "1.0", "--ppo_epochs", "2", "--generation_batches", "2",
                         "--eps_clip_high", "0.28", "--kl_estimator", "k3", "--eval_interval", "2"))
    out = tmp_path / "ppo"
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    assert len(train) == 3
    assert train[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the actor starts equal to the reference
    assert "actor_loss" not in train[0] and "actor_loss" in train[1]  # critic warm-up
    assert {"reward", "kl", "response_length", "critic_loss", "clip_frac", "unsup_loss", "generation_s",
            "train_s", "e2e_tokens_per_s", "kl_coef", "entropy"} <= set(train[1])
    assert train[-1]["kl_coef"] != pytest.approx(0.1)  # adaptive controller moved it
    assert train[1]["kl"] == pytest.approx(0.0, abs=1e-5) and train[2]["kl"] != 0.0  # moved after warm-up
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "eval"]
    assert [e["step"] for e in evals] == [0, 2, 3] and "pass_rate" in evals[0]
    actor = AutoModelForCausalLM.from_pretrained(out / "actor")
    ema = AutoModelForCausalLM.from_pretrained(out / "actor_ema")
    AutoModelForSequenceClassification.from_pretrained(out / "critic")
    w_a = actor.model.layers[0].mlp.up_proj.weight
    w_e = ema.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(w_a, w_e)
    assert set(res) == {"first", "final"}


@pytest.mark.slow
def test_ppo_tiny_zero3_lora_offloaded_reference(tmp_path, tiny_rm):
    ppo_main(_args(tmp_path, "z3", tiny_rm, "--zero_stage", "3", "--critic_zero_stage", "2",
                   "--reward_zero_stage", "3", "--lora_dim", "4", "--only_optimize_lora", "--critic_lora_dim", "4",
                   "--offload_reference_model", "--gradient_checkpointing", "--max_steps", "2"))
    train = [r for r in read_metrics(tmp_path / "z3" / "metrics.jsonl") if r["split"] == "train"]
    assert len(train) == 2 and train[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert (tmp_path / "z3" / "actor" / "model.safetensors").is_file()
    from transformers import AutoModelForSequenceClassification

    critic = AutoModelForSequenceClassification.from_pretrained(tmp_path / "z3" / "critic")
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_rm)
    assert not torch.equal(critic.score.weight, rm.score.weight)  # the value head trained under LoRA


@pytest.mark.slow
def test_stage3_requires_reward_model(tmp_path):
    from training.utils.config import ConfigError

    with pytest.raises(ConfigError, match="reward_model_name_or_path"):
        ppo_main(["--output_dir", str(tmp_path / "x")])


@pytest.mark.slow
def test_offload_reward_model_partitions_the_frozen_reward_model_into_cpu_memory(tiny_rm, tiny_tok):
    """DeepSpeed-Chat's step-3 --offload_reward_model: the reward model frozen under ZeRO-3 with its
    parameters offloaded to CPU, scoring as the plain one does."""
    from training.utils.arguments import parse_config
    from training.utils.distributed import init_distributed
    from training.utils.rl.models import build_reward_sources

    init_distributed()
    base = ["--reward_model_name_or_path", tiny_rm, "--per_device_training_batch_size", "2"]
    plain, (m0,) = build_reward_sources(parse_config(base, stage="rl"), tiny_tok)
    off, (m1,) = build_reward_sources(parse_config(base + ["--offload_reward_model"], stage="rl"), tiny_tok)
    assert not hasattr(m0, "zero_optimization_stage") and m1.zero_optimization_stage() == 3   # plain, then ZeRO-3
    assert m1.config["zero_optimization"]["offload_param"]["device"] == "cpu"
    ids = torch.tensor([tiny_tok("Hi there")["input_ids"] + [tiny_tok.eos_token_id]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.allclose(m1(ids, mask), m0(ids, mask), atol=1e-5)
