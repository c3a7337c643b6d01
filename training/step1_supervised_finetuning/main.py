"""Stage 1: supervised fine-tuning of the actor on prompt/answer pairs (DeepSpeed, ZeRO 0-3, LoRA).

    python training/step1_supervised_finetuning/main.py --model_name_or_path smollm2-135m \\
        --data_path bundled --zero_stage 2 --output_dir output/actor-models/smollm2-135m
"""
from __future__ import annotations

import math
import sys

import torch

from training.utils.config import parse_config
from training.utils.data import SFTCollator
from training.utils.distributed import all_reduce_sum, rank_checksums
from training.utils.ds_config import resolve_dtype
from training.utils.engine import build_train_engine, num_update_steps
from training.utils.loop import run, to_device
from training.utils.model import apply_lora, load_causal_lm, save_hf
from training.utils.losses import causal_lm_loss, causal_lm_nll
from training.utils.stage import StageRun, run_cli


def sft_step(engine, batch):
    logits = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    return causal_lm_loss(logits, batch["labels"]), {}


@torch.no_grad()
def evaluate(engine, loader) -> dict:
    """Token-weighted eval loss and perplexity over the eval slice (all ranks)."""
    engine.eval()
    total, count = 0.0, 0.0
    for batch in loader:
        batch = to_device(batch, engine.device)
        logits = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        s, c = causal_lm_nll(logits, batch["labels"])
        total, count = total + s.item(), count + c.item()
    total, count = all_reduce_sum([total, count])
    loss = total / max(count, 1.0)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}


def main(argv=None) -> dict:
    cfg = parse_config(argv, "Stage 1: supervised fine-tuning", stage="sft")
    with StageRun(cfg, "sft") as run_ctx:
        log = run_ctx.log
        tok = run_ctx.tokenizer("right")
        train_ds, eval_ds, stats = run_ctx.phase_data(tok, 1)
        dtype = resolve_dtype(cfg.ds.dtype, run_ctx.device.type)
        model = load_causal_lm(cfg.model.model_name_or_path, tok, trust_remote_code=cfg.model.trust_remote_code,
                               dropout=cfg.model.dropout, seed=cfg.optim.seed)
        model = apply_lora(model, cfg.lora)
        o = cfg.optim
        train_loader, eval_loader = run_ctx.loaders(train_ds, eval_ds, SFTCollator(tok.pad_token_id, cfg.sft.sft_loss_on),
                                                    o.per_device_train_batch_size, o.per_device_eval_batch_size)
        total = num_update_steps(len(train_loader), cfg)
        engine = build_train_engine(model, cfg, total)
        log.info("SFT: %d training rows, %d eval rows, %d optimizer steps, dtype %s", len(train_ds),
                 len(eval_ds), total, dtype)
        final = run(engine, train_loader, sft_step, lambda: evaluate(engine, eval_loader), cfg,
                    run_ctx.writer, total, desc="sft")
        checks = rank_checksums(engine.module)
        save_hf(engine.module, tok, cfg.log.output_dir, cfg.ds.zero_stage)
        log.info("saved the SFT model to %s", cfg.log.output_dir)
        run_ctx.summary(steps=total, final_eval=final, data=stats, rank_param_checksums=checks)
        return final


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
