import json

import pytest

from training.utils.arguments import parse_config
from training.utils.config import ConfigError
from training.utils.ds_config import eval_config, resolve_dtype, train_config


def test_zero_stages_and_batch_sizes():
    for stage in range(4):
        cfg = parse_config(["--zero_stage", str(stage), "--per_device_train_batch_size", "4",
                            "--gradient_accumulation_steps", "3"])
        c = train_config(cfg, world_size=2, device_type="cpu")
        assert c["zero_optimization"]["stage"] == stage
        assert c["train_batch_size"] == 4 * 3 * 2
        assert c["train_micro_batch_size_per_gpu"] == 4 and c["gradient_accumulation_steps"] == 3
        assert "bf16" not in c and "fp16" not in c  # CPU auto -> fp32
        assert c["gradient_clipping"] == 1.0


def test_offload_and_stage3_params():
    cfg = parse_config(["--zero_stage", "3", "--offload"])
    z = train_config(cfg, 1, "cpu")["zero_optimization"]
    assert z["offload_optimizer"]["device"] == "cpu" and z["offload_param"]["device"] == "cpu"
    z2 = train_config(parse_config(["--zero_stage", "2", "--offload"]), 1, "cpu")["zero_optimization"]
    assert z2["offload_optimizer"]["device"] == "cpu" and "offload_param" not in z2


def test_dtypes():
    assert resolve_dtype("auto", "cpu") == "fp32"
    assert resolve_dtype("bf16", "cpu") == "bf16"
    with pytest.raises(ConfigError, match="fp16 is not supported on CPU"):
        resolve_dtype("fp16", "cpu")
    c = train_config(parse_config(["--dtype", "bf16"]), 1, "cpu")
    assert c["bf16"] == {"enabled": True}
    c = train_config(parse_config(["--dtype", "fp16"]), 1, "cuda")
    assert c["fp16"]["enabled"] is True


def test_user_json_overrides(tmp_path):
    p = tmp_path / "ds.json"
    p.write_text(json.dumps({"zero_optimization": {"stage": 2, "reduce_bucket_size": 123}, "gradient_clipping": 0.3}))
    c = train_config(parse_config(["--zero_stage", "1", "--deepspeed_config", str(p)]), 1, "cpu")
    assert c["zero_optimization"]["stage"] == 2 and c["zero_optimization"]["reduce_bucket_size"] == 123
    assert c["zero_optimization"]["contiguous_gradients"] is True  # merged, not replaced
    assert c["gradient_clipping"] == 0.3


def test_bad_user_json(tmp_path):
    p = tmp_path / "ds.json"
    p.write_text("{bad")
    with pytest.raises(ConfigError, match=str(p)):
        train_config(parse_config(["--deepspeed_config", str(p)]), 1, "cpu")


def test_eval_config_keeps_stage3_only():
    cfg = parse_config([])
    assert eval_config(cfg, 1, "cpu", zero_stage=2)["zero_optimization"]["stage"] == 0
    assert eval_config(cfg, 1, "cpu", zero_stage=3)["zero_optimization"]["stage"] == 3


def test_cpu_training_uses_torchs_fused_adamw_and_it_steps_like_the_plain_one():
    import torch

    from training.utils.deepspeed_setup import make_optimizer
    from training.utils.model import load_causal_lm, load_tokenizer

    tok = load_tokenizer("tiny")
    weights = {}
    for flag in ("false", "true"):
        cfg = parse_config(["--model_name_or_path", "tiny", "--learning_rate", "1e-3", "--weight_decay", "0.1",
                            "--no_fused_kernels", flag], stage="sft")
        torch.manual_seed(0)
        model = load_causal_lm("tiny", tok, seed=0)
        opt = make_optimizer(model, cfg, offload=False)
        assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is (flag == "false")
        ids = torch.tensor([[5, 9, 11, 3, 7, 2]])
        for _ in range(3):
            opt.zero_grad()
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
        weights[flag] = torch.cat([p.detach().flatten() for p in model.parameters()])
    moved = (
        (weights["true"] - torch.cat([p.detach().flatten() for p in load_causal_lm("tiny", tok, seed=0).parameters()]))
        .abs()
        .max()
    )
    assert moved > 1e-4                                   # the steps did move the weights
    assert torch.allclose(weights["false"], weights["true"], atol=1e-6, rtol=0)
