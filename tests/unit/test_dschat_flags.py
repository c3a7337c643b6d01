"""DeepSpeed-Chat's command lines: every flag of its step 1-3 parsers is accepted with its meaning, and
its training scripts run unchanged from the stage directories (models and data paths substituted)."""


import shlex

import pytest

from training.utils.arguments import build_parser, parse_config
from training.utils.config import ConfigError, inert_flags

DS_ARGS = "deepspeed deepspeed_config deepscale deepscale_config"    # deepspeed.add_config_arguments


STEP1 = """data_path data_split sft_only_data_path data_output_path model_name_or_path per_device_train_batch_size
per_device_eval_batch_size max_seq_len learning_rate weight_decay num_train_epochs gradient_accumulation_steps
lr_scheduler_type num_warmup_steps output_dir seed local_rank gradient_checkpointing dropout offload dtype zero_stage
lora_dim lora_module_name only_optimize_lora lora_learning_rate compute_fp32_loss enable_tensorboard tensorboard_path
add_eot_token eot_token print_loss"""


STEP2 = """data_path data_split data_output_path model_name_or_path num_padding_at_beginning per_device_train_batch_size
per_device_eval_batch_size max_seq_len learning_rate weight_decay num_train_epochs gradient_accumulation_steps
lr_scheduler_type num_warmup_steps output_dir seed local_rank gradient_checkpointing dropout offload dtype zero_stage
lora_dim lora_module_name only_optimize_lora lora_learning_rate no_bf16_to_fp32_loss compute_fp32_loss eval_interval
eval_iters enable_tensorboard tensorboard_path add_eot_token print_loss no_fused_kernels
disable_dropout"""  # an older name


STEP3 = """data_path data_split data_output_path unsupervised_dataset_name unsupervised_dataset_config_name unsup_coef
actor_model_name_or_path critic_model_name_or_path num_padding_at_beginning per_device_generation_batch_size
per_device_training_batch_size generation_batches ppo_epochs max_prompt_seq_len max_answer_seq_len actor_learning_rate
critic_learning_rate actor_weight_decay critic_weight_decay num_train_epochs lr_scheduler_type
gradient_accumulation_steps num_warmup_steps output_dir seed preprocessing_num_workers local_rank enable_hybrid_engine
unpin_actor_parameters release_inference_cache inference_tp_size tp_gather_partition_size offload dtype
offload_reference_model offload_reward_model actor_zero_stage critic_zero_stage actor_gradient_checkpointing
critic_gradient_checkpointing actor_dropout critic_dropout actor_lora_dim actor_lora_module_name critic_lora_dim
critic_lora_module_name only_optimize_lora actor_lora_learning_rate critic_lora_learning_rate enable_ema
enable_mixed_precision_lora
compute_fp32_loss enable_tensorboard tensorboard_path add_eot_token align_overflow print_answers print_answers_interval
enable_test_mode test_stop_step
disable_actor_dropout disable_critic_dropout generation_batch_numbers per_device_mini_train_batch_size"""  # older names


@pytest.mark.parametrize("stage,flags", [("sft", STEP1), ("reward", STEP2), ("rl", STEP3)])
def test_every_dschat_flag_is_accepted(stage, flags):
    names = (flags + " " + DS_ARGS).split()
    known = build_parser(stage=stage)._option_string_actions
    assert [n for n in names if f"--{n}" not in known] == []
    if stage == "sft":      # DeepSpeed-Chat's DPO step takes stage 1's flags
        dpo = build_parser(stage="dpo")._option_string_actions
        assert [n for n in names if f"--{n}" not in dpo] == []


def test_dschat_flags_keep_their_meaning(tmp_path):
    ds_json = tmp_path / "ds.json"
    ds_json.write_text("{}")
    cfg = parse_config(shlex.split(
        "--actor_model_name_or_path a --critic_model_name_or_path c --actor_dropout 0.0 --critic_dropout 0.2 "
        "--actor_lora_learning_rate 3e-4 --critic_lora_learning_rate 2e-4 --critic_lora_module_name h. "
        "--critic_weight_decay 0.1 --actor_weight_decay 0.05 --generation_batch_numbers 2 "
        "--per_device_mini_train_batch_size 3 --lr_scheduler_type polynomial --print_answers "
        "--print_answers_interval 5 --enable_test_mode --test_stop_step 7 --enable_hybrid_engine --deepspeed "
        f"--num_padding_at_beginning 1 --deepscale_config {ds_json}"), stage="rl")
    assert (cfg.model.model_name_or_path, cfg.rl.critic.critic_model_name_or_path) == ("a", "c")
    assert (cfg.model.dropout, cfg.rl.critic.critic_dropout) == (0.0, 0.2)
    assert (cfg.lora.lora_learning_rate, cfg.rl.critic.critic_lora_learning_rate) == (3e-4, 2e-4)
    assert (cfg.rl.critic.critic_lora_module_name, cfg.rl.critic.critic_weight_decay, cfg.optim.weight_decay) == (
        "h.",
        0.1,
        0.05,
    )
    assert (cfg.rl.rollout.generation_batches, cfg.rl.loss.per_device_training_batch_size) == (2, 3)
    assert cfg.optim.lr_scheduler_type == "polynomial" and cfg.ds.deepspeed_config == str(ds_json)
    assert (cfg.rl.rollout.print_answers, cfg.rl.rollout.print_answers_interval, cfg.rl.test_stop_step) == (True, 5, 7)
    # stage 3's sequences are a prompt and its answer (DeepSpeed-Chat's step 3 has no --max_seq_len)
    assert cfg.data.max_seq_len == cfg.data.max_prompt_seq_len + cfg.data.max_answer_seq_len
    assert [line.split(" has ")[0] for line in inert_flags(cfg)] == [
        "--deepspeed", "--num_padding_at_beginning 1", "--enable_hybrid_engine"]
    rm = parse_config(["--disable_dropout", "--eval_iters", "4", "--no_fused_kernels"], stage="reward")
    assert (rm.model.dropout, rm.log.eval_iters, rm.ds.no_fused_kernels) == (0.0, 4, True)
    assert inert_flags(rm) == []


def test_dschat_flags_we_cannot_honour_stop_with_the_flag_named():
    with pytest.raises(ConfigError, match="--inference_tp_size 2"):
        parse_config(["--inference_tp_size", "2"], stage="rl")
    with pytest.raises(ConfigError, match="--unsup_coef is 0"):
        parse_config(["--unsupervised_dataset_name", "wikitext"], stage="rl")
    with pytest.raises(ConfigError, match="test_stop_step"):
        parse_config(["--enable_test_mode"], stage="rl")
    with pytest.raises(SystemExit):     # a stage-3 flag on stage 1 stops it, as DeepSpeed-Chat's step 1 would
        parse_config(["--enable_hybrid_engine"], stage="sft")


def test_unsupervised_text_is_cut_into_whole_blocks(tmp_path, tiny_tok):
    from training.utils.data.sources import DataError
    from training.utils.data.unsupervised import unsupervised_rows

    texts = ["the quick brown fox jumps over the lazy dog", "", "pack my box with five dozen liquor jugs"] * 5
    (tmp_path / "train.txt").write_text("\n".join(texts) + "\n")
    ids = [i for t in texts if t for i in tiny_tok(t, add_special_tokens=False)["input_ids"]]
    rows = unsupervised_rows(str(tmp_path / "train.txt"), "", tiny_tok, 16)
    assert len(rows) == len(ids) // 16 > 0
    assert [i for r in rows for i in r["input_ids"]] == ids[:len(rows) * 16]
    assert all(r["prompt_len"] == 0 for r in rows)
    assert unsupervised_rows(str(tmp_path), "", tiny_tok, 16) == rows         # the directory form
    with pytest.raises(DataError, match="fewer than 100000 tokens"):
        unsupervised_rows(str(tmp_path / "train.txt"), "", tiny_tok, 100000)
    with pytest.raises(DataError, match="cannot load it"):
        unsupervised_rows(str(tmp_path / "missing"), "", tiny_tok, 16)
