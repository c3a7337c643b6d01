"""Presets by model size and deployment: for OPT-1.3B, OPT-6.7B and Llama-2-7B model_shapes on each deployment
type, the chosen preset resolves to DeepSpeed-Chat's script values, field by field."""

import shlex

import pytest

from training.utils.algorithms import ALGORITHMS, algorithm_spec
from training.utils.arguments import parse_config
from training.utils.config import flat_settings
from training.utils.presets import CPU_MAX_PARAMS, ModelShape, choose, model_shape, shape_from_name

DEFAULTS = {
    1: dict(per_device_train_batch_size=16, per_device_eval_batch_size=16, max_seq_len=512, learning_rate=1e-3,
            weight_decay=0.0, num_train_epochs=1, gradient_accumulation_steps=1, lr_scheduler_type="cosine",
            num_warmup_steps=0, gradient_checkpointing=False, zero_stage=0, offload=False, lora_dim=0),
    2: dict(per_device_train_batch_size=16, per_device_eval_batch_size=16, max_seq_len=512, learning_rate=5e-5,
            weight_decay=0.0, num_train_epochs=1, gradient_accumulation_steps=1, lr_scheduler_type="cosine",
            num_warmup_steps=0, gradient_checkpointing=False, zero_stage=0, offload=False, lora_dim=0, dropout=None),
    3: dict(per_device_generation_batch_size=16, per_device_training_batch_size=16, generation_batches=1,
            ppo_epochs=1, max_prompt_seq_len=256, max_answer_seq_len=256, actor_learning_rate=9.65e-6,
            critic_learning_rate=5e-6, actor_weight_decay=0.0, critic_weight_decay=0.0, num_train_epochs=1,
            lr_scheduler_type="cosine", gradient_accumulation_steps=1, num_warmup_steps=100, actor_zero_stage=0,
            critic_zero_stage=0, actor_gradient_checkpointing=False, critic_gradient_checkpointing=False,
            offload_reference_model=False, actor_lora_dim=0, critic_lora_dim=0, enable_ema=False),
}


OURS = {"actor_learning_rate": "learning_rate", "actor_weight_decay": "weight_decay", "actor_zero_stage": "zero_stage",
        "actor_gradient_checkpointing": "gradient_checkpointing", "actor_lora_dim": "lora_dim"}


SETS = {"disable_dropout": ("dropout", 0.0)}


SCRIPTS = {
    "step1/opt/single_gpu/run_1.3b.sh": "--gradient_accumulation_steps 8 --lora_dim 128 --zero_stage 0 "
    "--enable_tensorboard --deepspeed",
    "step1/opt/single_gpu/run_6.7b_lora.sh": "--per_device_train_batch_size 8 --per_device_eval_batch_size 8 "
    "--max_seq_len 512 --learning_rate 1e-3 --weight_decay 0. --num_train_epochs 16 --gradient_accumulation_steps 16 "
    "--lr_scheduler_type cosine --num_warmup_steps 0 --seed 1234 --gradient_checkpointing --zero_stage 0 "
    "--lora_dim 128 --lora_module_name decoder.layers. --deepspeed",
    "step1/single_node/run_1.3b.sh": "--per_device_train_batch_size 8 --per_device_eval_batch_size 8 --max_seq_len 512 "
    "--learning_rate 9.65e-6 --weight_decay 0. --num_train_epochs 16 --gradient_accumulation_steps 1 "
    "--lr_scheduler_type cosine --num_warmup_steps 0 --seed 1234 --zero_stage 2 --deepspeed --enable_tensorboard",
    "step1/single_node/run_6.7b.sh": "--per_device_train_batch_size 6 --per_device_eval_batch_size 6 --max_seq_len 512 "
    "--learning_rate 9.65e-6 --weight_decay 0. --num_train_epochs 16 --gradient_accumulation_steps 1 "
    "--lr_scheduler_type cosine --num_warmup_steps 0 --seed 1234 --gradient_checkpointing --zero_stage 3 --deepspeed",
    "step1/single_node/llama2/run_llama2_7b.sh": "--per_device_train_batch_size 4 --per_device_eval_batch_size 4 "
    "--max_seq_len 512 --learning_rate 9.65e-6 --weight_decay 0. --num_train_epochs 4 --gradient_accumulation_steps 1 "
    "--lr_scheduler_type cosine --num_warmup_steps 0 --seed 1234 --gradient_checkpointing --zero_stage 3 --deepspeed",
    "step2/opt/single_gpu/run_350m.sh": "--num_padding_at_beginning 1 --weight_decay 0.1 --disable_dropout "
    "--gradient_accumulation_steps 4 --zero_stage 0 --enable_tensorboard --deepspeed",
    "step2/single_node/run_350m.sh": "--num_padding_at_beginning 1 --per_device_train_batch_size 8 "
    "--per_device_eval_batch_size 8 --max_seq_len 512 --learning_rate 5e-5 --weight_decay 0.1 --num_train_epochs 1 "
    "--gradient_accumulation_steps 1 --lr_scheduler_type cosine --num_warmup_steps 0 --seed 1234 --zero_stage 0 "
    "--deepspeed",
    "step2/opt/multi_node/run_350m.sh": "--num_padding_at_beginning 1 --per_device_train_batch_size 2 "
    "--per_device_eval_batch_size 2 --max_seq_len 512 --learning_rate 5e-5 --weight_decay 0.1 --disable_dropout "
    "--num_train_epochs 1 --gradient_accumulation_steps 1 --lr_scheduler_type cosine --num_warmup_steps 0 "
    "--seed 1234 --zero_stage 0 --deepspeed",
    "step2/llama2/run_llama2_7b.sh": "--per_device_train_batch_size 8 --per_device_eval_batch_size 8 --max_seq_len 512 "
    "--learning_rate 9.65e-6 --weight_decay 0.1 --num_padding_at_beginning 0 --num_train_epochs 1 "
    "--gradient_accumulation_steps 1 --lr_scheduler_type cosine --num_warmup_steps 0 --seed 1234 "
    "--gradient_checkpointing --zero_stage 3 --deepspeed --offload",
    "step3/opt/single_gpu/run_1.3b.sh": "--actor_zero_stage 0 --critic_zero_stage 0 --num_padding_at_beginning 1 "
    "--gradient_accumulation_steps 2 --deepspeed --actor_lora_dim 128 --enable_hybrid_engine "
    "--actor_gradient_checkpointing --actor_dropout 0.0",
    "step3/opt/single_gpu/run_6.7b_lora.sh": "--num_padding_at_beginning 1 --per_device_generation_batch_size 8 "
    "--per_device_training_batch_size 8 --generation_batches 1 --ppo_epochs 1 --max_answer_seq_len 256 "
    "--max_prompt_seq_len 256 --actor_learning_rate 5e-4 --critic_learning_rate 5e-6 --num_train_epochs 1 "
    "--lr_scheduler_type cosine --gradient_accumulation_steps 16 --num_warmup_steps 100 --deepspeed --seed 1234 "
    "--actor_zero_stage 0 --critic_zero_stage 0 --actor_lora_dim 128 --actor_gradient_checkpointing "
    "--critic_gradient_checkpointing --disable_actor_dropout --enable_hybrid_engine",
    "step3/opt/single_node/run_1.3b.sh": "--num_padding_at_beginning 1 --per_device_generation_batch_size 4 "
    "--per_device_training_batch_size 4 --generation_batches 1 --ppo_epochs 1 --max_answer_seq_len 256 "
    "--max_prompt_seq_len 256 --actor_learning_rate 9.65e-6 --critic_learning_rate 5e-6 --num_train_epochs 1 "
    "--lr_scheduler_type cosine --gradient_accumulation_steps 1 --actor_dropout 0.0 --num_warmup_steps 100 "
    "--deepspeed --seed 1234 --enable_hybrid_engine --actor_zero_stage 2 --critic_zero_stage 2 --enable_ema "
    "--enable_tensorboard",
    "step3/opt/single_node/run_6.7b.sh": "--num_padding_at_beginning 1 --per_device_generation_batch_size 4 "
    "--per_device_training_batch_size 4 --generation_batches 1 --ppo_epochs 1 --max_answer_seq_len 256 "
    "--max_prompt_seq_len 256 --actor_learning_rate 9.65e-6 --critic_learning_rate 5e-6 --actor_weight_decay 0.1 "
    "--critic_weight_decay 0.1 --num_train_epochs 1 --lr_scheduler_type cosine --gradient_accumulation_steps 1 "
    "--actor_gradient_checkpointing --actor_dropout 0.0 --num_warmup_steps 100 --deepspeed --seed 1234 "
    "--enable_hybrid_engine --actor_zero_stage 3 --critic_zero_stage 3",
    "step3/llama2/run_llama2_7b.sh": "--num_padding_at_beginning 1 --per_device_generation_batch_size 1 "
    "--per_device_training_batch_size 1 --generation_batches 1 --ppo_epochs 1 --max_answer_seq_len 256 "
    "--max_prompt_seq_len 256 --actor_learning_rate 9.65e-6 --critic_learning_rate 5e-6 --actor_weight_decay 0.1 "
    "--critic_weight_decay 0.1 --num_train_epochs 1 --lr_scheduler_type cosine --gradient_accumulation_steps 1 "
    "--actor_gradient_checkpointing --critic_gradient_checkpointing --offload_reference_model "
    "--disable_actor_dropout --num_warmup_steps 100 --deepspeed --seed 1234 --actor_zero_stage 3 "
    "--critic_zero_stage 3 --enable_hybrid_engine",
}


S1_GPU, S1_GPU67 = "step1/opt/single_gpu/run_1.3b.sh", "step1/opt/single_gpu/run_6.7b_lora.sh"


S1_NODE, S1_NODE67, S1_LLAMA = ("step1/single_node/run_1.3b.sh", "step1/single_node/run_6.7b.sh",
                                "step1/single_node/llama2/run_llama2_7b.sh")


S2_GPU, S2_NODE, S2_MULTI, S2_LLAMA = ("step2/opt/single_gpu/run_350m.sh", "step2/single_node/run_350m.sh",
                                       "step2/opt/multi_node/run_350m.sh", "step2/llama2/run_llama2_7b.sh")


S3_GPU, S3_GPU67, S3_NODE, S3_NODE67, S3_LLAMA = (
    "step3/opt/single_gpu/run_1.3b.sh", "step3/opt/single_gpu/run_6.7b_lora.sh", "step3/opt/single_node/run_1.3b.sh",
    "step3/opt/single_node/run_6.7b.sh", "step3/llama2/run_llama2_7b.sh")


EXPECTED = {
    ("opt-1.3b", "single_gpu"): (S1_GPU, S2_GPU, S3_GPU),            # 350M reward model: within 4x
    ("opt-1.3b", "single_node"): (S1_NODE, S2_NODE, S3_NODE),
    ("opt-1.3b", "multi_node"): (S1_NODE, S2_MULTI, S3_NODE),        # 66B is 50x away: single_node's 1.3B
    ("opt-6.7b", "single_node"): (S1_NODE67, S2_LLAMA, S3_NODE67),   # a 7B reward model: Llama-2-7B's, not 350M's
    ("opt-6.7b", "single_gpu"): (S1_GPU67, S2_LLAMA, S3_GPU67),
    ("opt-6.7b", "multi_node"): (S1_NODE67, S2_LLAMA, S3_NODE67),
    ("llama-2-7b", "single_node"): (S1_LLAMA, S2_LLAMA, S3_LLAMA),
    ("llama-2-7b", "single_gpu"): (S1_GPU67, S2_LLAMA, S3_GPU67),     # one GPU: OPT-6.7B's LoRA settings
    ("llama-2-7b", "multi_node"): (S1_LLAMA, S2_LLAMA, S3_LLAMA),
}


def dschat_values(step: int, script: str) -> dict:
    """The settings a DeepSpeed-Chat script gives (its flags over its parser's defaults), in our names."""
    values, tokens = dict(DEFAULTS[step]), shlex.split(SCRIPTS[script])
    for i, tok in enumerate(tokens):
        if not tok.startswith("--"):
            continue
        name = tok[2:]
        given = True if i + 1 == len(tokens) or tokens[i + 1].startswith("--") else tokens[i + 1]
        if name in SETS:
            values[SETS[name][0]] = SETS[name][1]
        elif name in values:
            values[name] = type(values[name])(given) if values[name] is not None else float(given)
    out = {OURS.get(k, k): v for k, v in values.items()}
    if out.get("dropout", 0) is None:
        out["dropout"] = -1.0       # DeepSpeed-Chat's None: keep the model's own dropout
    return out


def test_model_shapes_are_counted_from_the_config(model_shapes):
    # the published sizes: OPT-1.3B 1.316B, OPT-6.7B 6.658B, Llama-2-7B 6.738B parameters
    for name, params, family in (("opt-1.3b", 1.3158e9, "opt"), ("opt-6.7b", 6.6582e9, "opt"),
                                 ("llama-2-7b", 6.7384e9, "llama")):
        shape = model_shape(str(model_shapes[name]))
        assert shape.how == "config" and shape.family == family and abs(shape.params / params - 1) < 1e-3
    assert shape_from_name("facebook/opt-1.3b") == ModelShape(1.3e9, "opt", "name")
    assert shape_from_name("meta-llama/Llama-2-7b-hf") == ModelShape(7e9, "llama", "name")
    assert shape_from_name("gpt2") is None


@pytest.mark.parametrize("model,deployment", sorted(EXPECTED))
def test_presets_match_dschat_scripts_field_by_field(model_shapes, model, deployment, tmp_path):
    import yaml

    shape = model_shape(str(model_shapes[model]))
    for step, stage, script in zip((1, 2, 3), ("sft", "reward", "rl"), EXPECTED[model, deployment]):
        preset, _ = choose(step, str(model_shapes[model]), algorithm_spec("ppo"), deployment, True, shape)
        assert preset.source.endswith(script.split("/", 1)[1]), (step, preset.source)
        f = tmp_path / f"step{step}.yaml"
        f.write_text(yaml.safe_dump(preset.settings))
        cfg = parse_config(["--config", str(f)], stage=stage)
        want = dschat_values(step, script)
        leaves = {name.rsplit(".", 1)[1]: v for name, v in flat_settings(cfg).items()}
        got = {k: leaves[k] for k in want if k in leaves}
        assert got == want, (step, script)


def test_measured_presets_where_they_were_measured(model_shapes):
    small = ModelShape(CPU_MAX_PARAMS, "opt", "config")
    opt13 = str(model_shapes["opt-1.3b"])
    big = model_shape(opt13)     # a GPU-sized model on CPU takes its size's preset
    ppo, gpu = algorithm_spec("ppo"), "single_gpu"
    assert choose(1, "some/opt-350m", ppo, gpu, False, small)[0].name == "smollm2-step1"   # CPU
    assert choose(1, "some/opt-350m", ppo, gpu, True, small)[0].name == "opt-1.3b single_gpu"
    assert choose(3, "smollm2-135m", ppo, "single_node", True)[0].name == "smollm2-step3"          # any device
    assert choose(3, "tiny", algorithm_spec("online_dpo"), gpu, True)[0].name == "tiny-online_dpo"
    assert choose(3, "tiny", algorithm_spec("rloo"), gpu, True)[0].name == "tiny-grpo"   # the shared critic-free one
    assert choose(3, opt13, algorithm_spec("grpo"), gpu, True)[0].name == "smollm2-grpo"
    assert choose(1, opt13, ppo, gpu, False, big)[0].name == "opt-1.3b single_gpu"
    assert choose(2, "tiny", algorithm_spec("dpo"), gpu, False)[0].name == "tiny-dpo"
    assert choose(2, "tiny", algorithm_spec("kto"), gpu, False)[0].name == "tiny-dpo"    # the offline losses share it
    assert choose(2, "tiny", ppo, gpu, False)[0].name == "tiny-step2"


def test_the_algorithm_registry_says_which_stages_run():
    got = {a.name: (a.stages, a.offline, a.critic, a.stage_flags(2), a.stage_flags(3)) for a in ALGORITHMS.values()}
    assert got["ppo"] == ((1, 2, 3), False, True, [], ["--algo", "ppo"])
    assert got["grpo"] == ((1, 3), False, False, [], ["--algo", "grpo"])
    assert got["dpo"] == ((1, 2), True, False, ["--dpo_loss", "sigmoid"], [])
    assert got["simpo"] == ((1, 2), True, False, ["--dpo_loss", "simpo"], [])
    assert sorted(n for n, g in got.items() if g[1]) == ["dpo", "ipo", "kto", "orpo", "simpo"]
    assert [n for n, g in got.items() if g[2]] == ["ppo"]
    with pytest.raises(Exception, match="unknown algo 'sigmoid'"):
        algorithm_spec("sigmoid")
