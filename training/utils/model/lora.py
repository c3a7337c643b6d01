"""LoRA through peft, DeepSpeed-Chat's knobs (--lora_dim, --lora_module_name, --only_optimize_lora)."""
from __future__ import annotations

import torch

from ..config import LoraConfig, OptimConfig

_HEADS = ("lm_head", "score", "v_head", "embed_out")


def lora_targets(model, module_name: str) -> list[str]:
    """Full names of the linear layers to adapt: all linear layers of the transformer blocks, or
    those whose name contains ``module_name`` (DeepSpeed-Chat semantics)."""
    try:
        from transformers.pytorch_utils import Conv1D
        linear_types: tuple = (torch.nn.Linear, Conv1D)
    except ImportError:  # pragma: no cover - very old transformers
        linear_types = (torch.nn.Linear,)
    names = [n for n, m in model.named_modules()
             if isinstance(m, linear_types) and n.split(".")[-1] not in _HEADS
             and (module_name in n if module_name else True)]
    if not names:
        raise ValueError(f"lora_module_name {module_name!r} matches no linear layer of "
                         f"{type(model).__name__}")
    return names


def apply_lora(model, cfg: LoraConfig):
    """Wrap ``model`` with peft LoRA adapters; base weights stay trainable unless only_optimize_lora."""
    if cfg.lora_dim <= 0:
        return model
    from peft import LoraConfig as PeftLoraConfig, get_peft_model

    targets = lora_targets(model, cfg.lora_module_name)
    pcfg = PeftLoraConfig(r=cfg.lora_dim, lora_alpha=cfg.lora_alpha or cfg.lora_dim,
                          lora_dropout=cfg.lora_dropout, target_modules=targets, bias="none",
                          fan_in_fan_out=type(model).__name__.startswith("GPT2"))
    model = get_peft_model(model, pcfg)
    if not cfg.only_optimize_lora:
        for n, p in model.named_parameters():
            if "lora_" not in n:
                p.requires_grad_(True)
    return model


def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def param_groups(model, optim: OptimConfig, lora: LoraConfig) -> list[dict]:
    """AdamW groups: decay / no decay (biases, norms), LoRA weights at lora_learning_rate."""
    groups = {"decay": [], "no_decay": [], "lora": []}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "lora_" in n:
            groups["lora"].append(p)
        elif p.ndim < 2 or "norm" in n.lower() or n.endswith(".bias"):
            groups["no_decay"].append(p)
        else:
            groups["decay"].append(p)
    out = [{"params": groups["decay"], "weight_decay": optim.weight_decay},
           {"params": groups["no_decay"], "weight_decay": 0.0},
           {"params": groups["lora"], "weight_decay": 0.0, "lr": lora.lora_learning_rate}]
    return [g for g in out if g["params"]]
