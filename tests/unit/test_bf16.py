"""bf16 end to end on CPU (DeepSpeed's bf16 on the CPU accelerator) and the fp16 configs a GPU runs.

bf16 paths are compared with fp32 by logits, not by greedy tokens (a near-tie can flip in bf16).
TOL is the stated tolerance: bf16 keeps 8 bits of mantissa, so logits of magnitude ~1 on these
models differ from fp32 by up to ~0.005 (measured on tiny and tiny-opt); TOL allows 4x that.
"""


import json

import pytest
import torch

from training.utils.arguments import parse_config
from training.utils.config import ConfigError
from training.utils.ds_config import eval_config, train_config


def test_fp16_and_bf16_configs_are_valid_deepspeed_configs(tmp_path):
    from deepspeed.runtime.config import DeepSpeedConfig

    fp16 = DeepSpeedConfig(train_config(parse_config(["--dtype", "fp16", "--zero_stage", "2"]), 1, "cuda"))
    f = fp16.float16_config
    assert f.enabled and f.loss_scale == 0 and f.initial_scale_power == 16       # dynamic loss scaling from 2^16
    assert f.loss_scale_window == 100 and f.hysteresis == 2 and f.min_loss_scale == 1
    assert not fp16.bfloat16_config.enabled and fp16.zero_optimization_stage == 2
    user = tmp_path / "ds.json"
    user.write_text(json.dumps({"fp16": {"initial_scale_power": 12}}))
    over = DeepSpeedConfig(train_config(parse_config(["--dtype", "fp16", "--deepspeed_config", str(user)]), 1, "cuda"))
    assert over.float16_config.enabled and over.float16_config.initial_scale_power == 12
    frozen = DeepSpeedConfig(eval_config(parse_config(["--dtype", "fp16"]), 1, "cuda", zero_stage=3))
    assert frozen.float16_config.enabled and frozen.zero_optimization_stage == 3
    bf16 = DeepSpeedConfig(train_config(parse_config(["--dtype", "bf16"]), 1, "cpu"))
    assert bf16.bfloat16_config.enabled and not bf16.float16_config.enabled
    with pytest.raises(ConfigError, match="fp16 is not supported on CPU"):
        train_config(parse_config(["--dtype", "fp16"]), 1, "cpu")


def test_bf16_server_answers_like_its_engine():
    from fastapi.testclient import TestClient

    from applications.chat_engine import ChatEngine, Sampling
    from applications.server import Limits, create_app

    engine = ChatEngine("tiny", template="plain", dtype=torch.bfloat16)
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    r = TestClient(create_app(engine, Limits())).post("/v1/chat/completions", json={
        "model": "tiny", "messages": msgs, "max_tokens": 6, "temperature": 0})
    assert r.status_code == 200
    want = engine.reply(msgs, 6, Sampling(greedy=True))
    assert r.json()["choices"][0]["message"]["content"] == want.text and want.completion_tokens > 0
