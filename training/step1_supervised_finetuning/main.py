"""Stage 1: supervised fine-tuning of the actor on prompt/answer pairs (DeepSpeed, ZeRO 0-3, LoRA).

    python training/step1_supervised_finetuning/main.py --model_name_or_path smollm2-135m \\
        --data_path bundled --zero_stage 2 --output_dir output/actor-models/smollm2-135m
"""
from __future__ import annotations

import math
import sys

import torch

from training.utils.arguments import parse_config
from training.utils.data import SFTCollator
from training.utils.distributed import all_reduce_sum, rank_checksums
from training.utils.ds_config import resolve_dtype
from training.utils.loop import run, to_device
from training.utils.model import load_causal_lm, save_hf
from training.utils.losses import IGNORE, causal_lm_loss, causal_lm_nll
from training.utils.stage import StageRun, run_cli


def scored_logits(engine, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) over the columns from the state before the batch's first scored label on:
    the LM head (a fifth of SmolLM2's forward) and the log-softmax skip the prompt columns that
    no row scores. Labels stay aligned with the logits as in ``causal_lm_nll``."""
    labels = batch["labels"]
    scored = (labels[:, 1:] != IGNORE).any(0).nonzero()
    first = int(scored[0]) if scored.numel() else labels.shape[1] - 1      # the state predicting it
    logits = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                    logits_to_keep=labels.shape[1] - first).logits
    return logits, labels[:, first:]


def sft_step(engine, batch):
    return causal_lm_loss(*scored_logits(engine, batch)), {}


@torch.no_grad()
def evaluate(engine, loader) -> dict:
    """Token-weighted eval loss and perplexity over the eval slice (all ranks)."""
    engine.eval()
    total, count = 0.0, 0.0
    for batch in loader:
        batch = to_device(batch, engine.device)
        s, c = causal_lm_nll(*scored_logits(engine, batch))
        total, count = total + s.item(), count + c.item()
    total, count = all_reduce_sum([total, count])
    loss = total / max(count, 1.0)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}


def main(argv=None) -> dict:
    cfg = parse_config(argv, "Stage 1: supervised fine-tuning", stage="sft")
    with StageRun(cfg, "sft") as run_ctx:
        s = run_ctx.setup(1, load_causal_lm, lambda tok: SFTCollator(tok.pad_token_id, cfg.sft.sft_loss_on))
        engine = s.engine
        run_ctx.log.info("SFT: %d training rows, %d eval rows, %d optimizer steps, dtype %s", len(s.train_ds),
                         len(s.eval_ds), s.total, resolve_dtype(cfg.ds.dtype, run_ctx.device.type))
        final = run(engine, s.train_loader, sft_step, lambda: evaluate(engine, s.eval_loader), cfg,
                    run_ctx.writer, s.total, desc="sft")
        checks = rank_checksums(engine.module)
        save_hf(engine.module, s.tok, cfg.log.output_dir, cfg.ds.zero_stage)
        run_ctx.log.info("saved the SFT model to %s", cfg.log.output_dir)
        run_ctx.summary(steps=s.total, final_eval=final, data=s.stats, rank_param_checksums=checks)
        return final


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
