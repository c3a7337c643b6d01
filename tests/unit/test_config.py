import json

import pytest

from training.utils.arguments import parse_config
from training.utils.config import Config, ConfigError, parse_split


def test_defaults_and_validation():
    cfg = parse_config([])
    assert isinstance(cfg, Config)
    assert cfg.data.data_path == ["bundled"]
    assert cfg.model.model_name_or_path == "smollm2-135m"
    assert cfg.ds.zero_stage == 0 and cfg.lora.lora_dim == 0


def test_deepspeed_chat_flags():
    cfg = parse_config(["--data_path", "Dahoas/rm-static", "local/jsonfile", "--data_split", "6,2,2",
                        "--model_name_or_path", "1.3b", "--per_device_train_batch_size", "4",
                        "--max_seq_len", "512", "--learning_rate", "9.65e-6", "--zero_stage", "3",
                        "--offload", "--dtype", "bf16", "--lora_dim", "128", "--lora_module_name",
                        "decoder.layers.", "--only_optimize_lora", "--gradient_checkpointing",
                        "--num_warmup_steps", "10", "--gradient_accumulation_steps", "2",
                        "--enable_tensorboard", "--local_rank", "0"])
    assert cfg.data.data_path == ["Dahoas/rm-static", "local/jsonfile"]
    assert cfg.data.data_split == "6,2,2" and cfg.data.max_seq_len == 512
    assert cfg.optim.per_device_train_batch_size == 4 and cfg.optim.learning_rate == pytest.approx(9.65e-6)
    assert cfg.ds.zero_stage == 3 and cfg.ds.offload is True and cfg.ds.dtype == "bf16"
    assert cfg.lora.lora_dim == 128 and cfg.lora.only_optimize_lora is True
    assert cfg.lora.lora_module_name == "decoder.layers."
    assert cfg.model.gradient_checkpointing is True
    assert cfg.optim.gradient_accumulation_steps == 2 and cfg.ds.local_rank == 0


def test_dash_spelling_aliases_and_bool_values():
    cfg = parse_config(["--max-seq-len", "300", "--actor_zero_stage", "2", "--gradient-clipping", "0.5",
                        "--enable_tensorboard", "false"])
    assert cfg.data.max_seq_len == 300 and cfg.ds.zero_stage == 2
    assert cfg.optim.max_grad_norm == 0.5 and cfg.log.enable_tensorboard is False


def test_yaml_file_sections_flat_keys_and_cli_precedence(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  learning_rate: 0.001\n  seed: 7\nmax_seq_len: 64\nmax_prompt_seq_len: 32\n"
                 "data_path: [a.jsonl, b.jsonl]\n")
    cfg = parse_config(["--config", str(p), "--seed", "9"])
    assert cfg.optim.learning_rate == 0.001
    assert cfg.optim.seed == 9  # command line wins over the file
    assert cfg.data.max_seq_len == 64 and cfg.data.data_path == ["a.jsonl", "b.jsonl"]


def test_each_stage_takes_its_own_flags_and_any_file_key(tmp_path):
    from training.utils.config import STAGE_SECTIONS

    assert parse_config(["--kl_coef", "0.3"], stage="rl").rl.kl.kl_coef == 0.3
    assert parse_config(["--beta", "0.3"], stage="rl").dpo.beta == 0.3          # online DPO's temperature
    for stage, flag in [("sft", "--kl_coef"), ("reward", "--beta"), ("dpo", "--rm_loss"), ("rl", "--sft_loss_on"),
                        ("sft", "--max_answer_seq_len"), ("reward", "--reward")]:
        with pytest.raises(SystemExit):
            parse_config([flag, "1"], stage=stage)
    p = tmp_path / "all.yaml"                  # one file for the whole pipeline: every stage reads it
    p.write_text("rl:\n  kl_coef: 0.25\nrewards:\n  reward: [checker]\nrm:\n  rm_loss: per_token\n")
    for stage in STAGE_SECTIONS:
        cfg = parse_config(["--config", str(p)], stage=stage)
        assert cfg.rl.kl.kl_coef == 0.25 and cfg.rewards.reward == ["checker"] and cfg.rm.rm_loss == "per_token"


def test_json_file(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"ds": {"zero_stage": 2}, "lora_dim": 8}))
    cfg = parse_config(["--config", str(p)])
    assert cfg.ds.zero_stage == 2 and cfg.lora.lora_dim == 8


@pytest.mark.parametrize("text, msg", [
    ("nonsense_key: 1\n", "unknown key 'nonsense_key'"),
    ("optim:\n  max_seq_len: 3\n", "unknown key 'optim.max_seq_len'"),
    ("learning_rate: [1, 2]\n", "'learning_rate'"),
    ("seed: 1.5\n", "'seed': expected an integer"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("a: [\n", "cannot parse"),
])
def test_bad_config_file_names_file_and_key(tmp_path, text, msg):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        parse_config(["--config", str(p)])
    assert str(p) in str(e.value) and msg in str(e.value)


@pytest.mark.parametrize("argv, msg", [
    (["--max_prompt_seq_len", "300", "--max_seq_len", "256"], "max_prompt_seq_len (300)"),
    (["--data_split", "1,2"], "data_split"),
    (["--only_optimize_lora"], "only_optimize_lora needs lora_dim"),
    (["--eval_fraction", "1.5"], "eval_fraction"),
    (["--deepspeed_config", "/nonexistent.json"], "not found"),
    (["--group_baseline"], "num_samples_per_prompt >= 2"),
    (["--dpo_loss", "ipo", "--label_smoothing", "0.1"], "sigmoid DPO loss only, not ipo"),
    (["--adaptive_kl", "--algo", "rloo", "--num_samples_per_prompt", "2", "--kl_coef", "0"],
     "adaptive_kl scales kl_coef, which is 0"),
    (["--group_baseline", "--algo", "grpo", "--num_samples_per_prompt", "4"], "group_baseline is a PPO option"),
])
def test_validation_errors(argv, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        parse_config(argv)


def test_bad_flag_value_exits():
    with pytest.raises(SystemExit):
        parse_config(["--zero_stage", "5"])
    with pytest.raises(SystemExit):
        parse_config(["--learning_rate", "fast"])


def test_parse_split():
    assert parse_split("2,4,4") == pytest.approx([0.2, 0.4, 0.4])
    assert parse_split("10,0,0") == [1.0, 0.0, 0.0]
    with pytest.raises(ConfigError):
        parse_split("0,0,0")


def test_config_round_trip(tmp_path):
    cfg = parse_config(["--lora_dim", "4", "--seed", "3"])
    cfg.save(tmp_path / "config.json")
    again = parse_config(["--config", str(tmp_path / "config.json")])
    assert again.to_dict() == cfg.to_dict()


def test_help_of_every_stage_renders_its_flags():
    from training.utils.arguments import build_parser
    from training.utils.config import STAGE_SECTIONS

    for stage in (None, *STAGE_SECTIONS):
        text = " ".join(build_parser("help", stage).format_help().split())
        assert "--seed" in text and "--data_path" in text, stage
        assert "small tasks are 2-4% of the rows" in text, stage      # a literal '%' in a help string


def test_rl_settings_are_nested_by_concern_and_flags_keep_their_names(tmp_path):
    cfg = parse_config(["--kl_ctl", "0.05", "--ppo_epochs", "2", "--critic_learning_rate", "1e-5",
                        "--num_samples_per_prompt", "4", "--prompt_curriculum", "--balance_key", "task",
                        "--enable_ema", "--unsup_coef", "27.8", "--top_p", "0.9"], stage="rl")
    rl = cfg.rl
    assert (rl.kl.kl_coef, rl.loss.ppo_epochs, rl.critic.critic_learning_rate) == (0.05, 2, 1e-5)
    assert (rl.rollout.num_samples_per_prompt, rl.rollout.top_p, rl.ptx.unsup_coef) == (4, 0.9, 27.8)
    assert rl.curriculum.prompt_curriculum and rl.ema.enable_ema and rl.algo == "ppo"
    saved = json.loads(json.dumps(cfg.to_dict()))
    assert saved["rl"]["kl"]["kl_coef"] == 0.05 and saved["rl"]["critic"]["critic_learning_rate"] == 1e-5
    # a file may nest the sections, or give a section's leaves flat, or give leaves at the top level
    for i, text in enumerate(["rl:\n  kl:\n    kl_coef: 0.3\n  loss:\n    cliprange: 0.1\n",
                              "rl:\n  kl_coef: 0.3\n  cliprange: 0.1\n", "kl_coef: 0.3\ncliprange: 0.1\n"]):
        (tmp_path / f"c{i}.yaml").write_text(text)
        c = parse_config(["--config", str(tmp_path / f"c{i}.yaml")], stage="rl")
        assert (c.rl.kl.kl_coef, c.rl.loss.cliprange) == (0.3, 0.1)
    for text, where in [
        ("rl:\n  kl:\n    cliprange: 0.1\n", "rl.kl.cliprange"),
        ("data:\n  kl_coef: 1\n", "data.kl_coef"),
        ("rl:\n  kl:\n    bogus: 1\n", "rl.kl.bogus"),
    ]:
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(ConfigError, match=f"unknown key '{where}'"):
            parse_config(["--config", str(tmp_path / "bad.yaml")], stage="rl")
