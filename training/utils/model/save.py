"""Save a (possibly ZeRO-3 partitioned, possibly LoRA-wrapped) model in Hugging Face format.

Parameters are gathered one at a time under ZeRO-3; LoRA deltas are merged into the base weights
in the saved copy only (the live model is untouched); the result is a safetensors directory that
``AutoModelForCausalLM.from_pretrained`` loads.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


from ..distributed import barrier, is_main
from ..files import usual_modes
from .lora import is_peft
from .loader import clean_config


def gathered_state_dict(model, zero_stage: int) -> dict:
    """Full state dict on rank 0 (CPU tensors), {} on other ranks."""
    sd: dict = {}
    if zero_stage == 3:
        import deepspeed

        for name, p in model.named_parameters():
            with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                if is_main():
                    sd[name] = p.data.detach().cpu().clone()
        if is_main():
            params = {n for n, _ in model.named_parameters()}
            for name, b in model.state_dict().items():
                if name not in params and b.numel() > 0:
                    sd[name] = b.detach().cpu().clone()
    elif is_main():
        seen = set()
        for name, t in model.state_dict().items():
            if t.data_ptr() in seen and t.numel() > 0:
                continue  # tied weights: keep the first name
            seen.add(t.data_ptr())
            sd[name] = t.detach().cpu().clone()
    return sd


def merge_lora_state_dict(model, sd: dict) -> dict:
    """peft state dict -> plain base-model state dict with W += scaling * B @ A."""
    adapter = model.active_adapter if isinstance(model.active_adapter, str) else model.active_adapters[0]
    scaling = {n: m.scaling[adapter] for n, m in model.named_modules() if hasattr(m, "scaling")
               and isinstance(m.scaling, dict) and adapter in m.scaling}
    fan_in_fan_out = model.peft_config[adapter].fan_in_fan_out
    out = {}
    for name, t in sd.items():
        if ".lora_" in name:
            continue
        out[name] = t
    for mod, s in scaling.items():
        a = sd.get(f"{mod}.lora_A.{adapter}.weight")
        b = sd.get(f"{mod}.lora_B.{adapter}.weight")
        if a is None or b is None:
            continue
        delta = (b.float() @ a.float()) * s
        key = f"{mod}.base_layer.weight"
        if fan_in_fan_out:
            delta = delta.T
        out[key] = (out[key].float() + delta).to(out[key].dtype)
    prefix = "base_model.model."
    return {k[len(prefix):].replace(".base_layer.", ".") if k.startswith(prefix) else k: v
            for k, v in out.items()}


def save_hf(model, tokenizer, out_dir: str | os.PathLike, zero_stage: int = 0) -> None:
    """Gather (ZeRO-3), merge LoRA, and write ``out_dir`` on rank 0 (see ``write_hf``)."""
    write_hf(model, gathered_state_dict(model, zero_stage), tokenizer, out_dir)


def write_hf(model, sd: dict, tokenizer, out_dir: str | os.PathLike) -> None:
    """Write the state dict ``sd`` of ``model`` (rank 0's; {} elsewhere) as a Hugging Face directory.

    Files are written to a temporary directory first and then moved in one by one (each move is
    atomic), so a crash never leaves a half-written weight file; logs and metrics already in
    ``out_dir`` are kept, and weight shards of an earlier save that the new one does not have are
    removed.
    """
    if is_main():
        if is_peft(model):
            sd = merge_lora_state_dict(model, sd)
            base = model.get_base_model()
        else:
            base = model
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
        try:
            clean_config(base.config)
            use_cache = base.config.use_cache
            base.config.use_cache = True
            try:
                base.save_pretrained(tmp, state_dict=sd, safe_serialization=True)
            finally:
                base.config.use_cache = use_cache
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            usual_modes(tmp)
            new = {p.name for p in tmp.iterdir()}
            for old in out.glob("model*.safetensors*"):
                if old.name not in new:
                    old.unlink()
            for f in sorted(tmp.iterdir(), key=lambda p: p.name.endswith(".json")):
                os.replace(f, out / f.name)  # weights first, config/index last
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    barrier()
