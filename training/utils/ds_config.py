"""DeepSpeed config builders: ZeRO 0-3, CPU offload, precision, clipping; a user JSON overrides."""
from __future__ import annotations

import json
from typing import Optional

import torch

from .config import Config, ConfigError


def resolve_dtype(requested: str, device_type: str) -> str:
    """'auto' -> bf16 on CUDA with bf16, fp16 on older CUDA, fp32 on CPU."""
    if requested != "auto":
        if device_type == "cpu" and requested == "fp16":
            raise ConfigError("dtype fp16 is not supported on CPU; use fp32 or bf16")
        return requested
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def torch_dtype(name: str) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _deep_update(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
    return base


def load_user_json(path: str) -> dict:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a DeepSpeed config must be a JSON object")
    return data


def train_config(cfg: Config, world_size: int, device_type: str,
                 zero_stage: Optional[int] = None, offload: Optional[bool] = None) -> dict:
    """DeepSpeed config for a trainable engine."""
    stage = cfg.ds.zero_stage if zero_stage is None else zero_stage
    off = cfg.ds.offload if offload is None else offload
    dtype = resolve_dtype(cfg.ds.dtype, device_type)
    o = cfg.optim
    zero: dict = {"stage": stage, "overlap_comm": device_type != "cpu", "contiguous_gradients": True}
    off_device = "cpu" if off else "none"
    if stage > 0:
        zero["offload_optimizer"] = {"device": off_device}
    if stage == 3:
        zero.update({
            "offload_param": {"device": off_device},
            "stage3_param_persistence_threshold": 1e4,
            "stage3_max_live_parameters": 3e7,
            "stage3_prefetch_bucket_size": 3e7,
            "stage3_gather_16bit_weights_on_model_save": False,
        })
    conf = {
        "train_batch_size": o.per_device_train_batch_size * o.gradient_accumulation_steps * world_size,
        "train_micro_batch_size_per_gpu": o.per_device_train_batch_size,
        "gradient_accumulation_steps": o.gradient_accumulation_steps,
        "steps_per_print": 10**9,
        "zero_optimization": zero,
        "gradient_clipping": o.max_grad_norm,
        "prescale_gradients": False,
        "wall_clock_breakdown": False,
        # We hand DeepSpeed a torch AdamW on CPU; allow it with ZeRO and offload.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
    }
    if dtype == "bf16":
        conf["bf16"] = {"enabled": True}
    elif dtype == "fp16":
        # dynamic loss scaling: start at 2^16, halve on overflow (after 2 in a row), double after 100 clean steps
        conf["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 100,
                        "hysteresis": 2, "min_loss_scale": 1}
    if cfg.ds.deepspeed_config:
        _deep_update(conf, load_user_json(cfg.ds.deepspeed_config))
    return conf


def eval_config(cfg: Config, world_size: int, device_type: str, zero_stage: int = 0,
                offload: bool = False) -> dict:
    """DeepSpeed config for a frozen engine (reference / reward model): no optimizer."""
    dtype = resolve_dtype(cfg.ds.dtype, device_type)
    zero: dict = {"stage": zero_stage if zero_stage == 3 else 0}
    if zero_stage == 3:
        zero.update({"offload_param": {"device": "cpu" if offload else "none"},
                     "stage3_param_persistence_threshold": 1e4})
    conf = {
        "train_batch_size": cfg.optim.per_device_train_batch_size * world_size,
        "train_micro_batch_size_per_gpu": cfg.optim.per_device_train_batch_size,
        "steps_per_print": 10**9,
        "zero_optimization": zero,
        "wall_clock_breakdown": False,
    }
    if dtype == "bf16":
        conf["bf16"] = {"enabled": True}
    elif dtype == "fp16":
        conf["fp16"] = {"enabled": True}
    return conf
