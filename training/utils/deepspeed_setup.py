"""Building DeepSpeed engines for training and frozen inference: optimizer, lr schedule, ZeRO config,
gradient checkpointing."""

from __future__ import annotations

import logging
import math
from typing import Optional

import torch

from .config import Config
from .distributed import device, world_size
from .ds_config import eval_config, resolve_dtype, torch_dtype, train_config
from .model.lora import param_groups
from .model.reward import ValueModel

log = logging.getLogger(__name__)


def make_optimizer(model, cfg: Config, offload: bool):
    groups = param_groups(model, cfg.optim, cfg.lora)
    kw = dict(lr=cfg.optim.learning_rate, betas=(cfg.optim.adam_beta1, cfg.optim.adam_beta2))
    if device().type == "cuda" and (offload or not cfg.ds.no_fused_kernels):
        from deepspeed.ops.adam import DeepSpeedCPUAdam, FusedAdam

        return DeepSpeedCPUAdam(groups, adamw_mode=True, **kw) if offload else FusedAdam(groups, **kw)
    return torch.optim.AdamW(groups, **kw, fused=device().type == "cpu" and not cfg.ds.no_fused_kernels)


def num_update_steps(num_micro_batches_per_epoch: int, optim) -> int:
    """Optimizer steps of a run: epochs of ``num_micro_batches_per_epoch``, capped by ``optim.max_steps``."""
    per_epoch = max(1, math.ceil(num_micro_batches_per_epoch / optim.gradient_accumulation_steps))
    total = per_epoch * optim.num_train_epochs
    return min(total, optim.max_steps) if optim.max_steps > 0 else total


def enable_gradient_checkpointing(model) -> None:
    """On the Hugging Face model inside ``model`` (a reward / value model's ``.model``, a LoRA wrapper)."""
    target = model.model if isinstance(model, ValueModel) else model
    target = target.get_base_model() if hasattr(target, "get_base_model") else target
    target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def build_train_engine(model, cfg: Config, total_steps: int, zero_stage: Optional[int] = None,
                       offload: Optional[bool] = None):
    """deepspeed.initialize with our optimizer and schedule; returns the engine."""
    import deepspeed
    from transformers import get_scheduler

    stage = cfg.ds.zero_stage if zero_stage is None else zero_stage
    off = cfg.ds.offload if offload is None else offload
    if cfg.model.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    optimizer = make_optimizer(model, cfg, off)
    warmup = cfg.optim.num_warmup_steps
    scheduler = get_scheduler(cfg.optim.lr_scheduler_type, optimizer, num_warmup_steps=warmup,
                              num_training_steps=max(total_steps, 1))
    conf = train_config(cfg, world_size(), device().type, zero_stage=stage, offload=off)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                      config=conf)
    if stage == 0 and world_size() == 1:
        # one rank and no ZeRO optimizer: DeepSpeed would still flatten every gradient into one
        # buffer, "all-reduce" it over the one rank and copy it back after each backward (0.3-0.4 s
        # a step for SmolLM2-135M on 2 CPU cores); the gradients are the same without it
        engine.enable_backward_allreduce = False
    log.info("DeepSpeed engine: ZeRO-%d, offload=%s, dtype=%s, micro-batch %d x accumulation %d x %d ranks",
             stage, off, "bf16" if conf.get("bf16") else "fp16" if conf.get("fp16") else "fp32",
             conf["train_micro_batch_size_per_gpu"], conf["gradient_accumulation_steps"], world_size())
    return engine


def frozen(model, cfg: Config, zero_stage: int = 0, offload: bool = False):
    """A frozen model for inference (reference, reward): partitioned by a DeepSpeed ZeRO-3 engine
    when ``zero_stage == 3`` (optionally with parameters offloaded to CPU), otherwise moved to
    the device in the training precision."""
    model.requires_grad_(False).eval()
    dev = device()
    if zero_stage == 3:
        import deepspeed

        conf = eval_config(cfg, world_size(), dev.type, zero_stage=3, offload=offload)
        engine = deepspeed.initialize(model=model, config=conf)[0]
        engine.eval()
        return engine
    return model.to(device=dev, dtype=torch_dtype(resolve_dtype(cfg.ds.dtype, dev.type)))
