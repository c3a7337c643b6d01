"""DPO and the other offline preference losses: the alternative second stage that turns the SFT model
into a chat model directly.

The policy (trainable, DeepSpeed) scores the chosen and rejected answers of the phase-2 pairs, and,
for the losses that need one, a frozen reference (the starting model unless
``--ref_model_name_or_path``) does too. ``--dpo_loss``: sigmoid (DPO, with ``--label_smoothing`` for
conservative DPO), ipo, kto, simpo, orpo (``training/utils/losses.py``, as in the papers).
The result is saved like an SFT actor, so ``chat.py`` and Stage 3 can use it.

    python training/step2_reward_model_finetuning/dpo_main.py \\
        --model_name_or_path output/actor-models/smollm2-135m --output_dir output/actor-models/smollm2-135m-dpo
"""
from __future__ import annotations

import sys

import torch

from training.utils.arguments import parse_config
from training.utils.data import PairCollator
from training.utils.distributed import all_reduce_sum
from training.utils.deepspeed_setup import frozen
from training.utils.loop import run, to_device
from training.utils.model import load_causal_lm, save_hf
from training.utils.stage import StageRun, run_cli
from training.utils.losses import PREFERENCE_LOSSES, PairLogps
from training.utils.shared_prefix import prompt_answer_layout, state_logprobs


def frozen_reference(cfg, tok):
    """The reference model, frozen; partitioned with ZeRO-3 when the policy is."""
    name = cfg.dpo.ref_model_name_or_path or cfg.model.model_name_or_path
    ref = load_causal_lm(name, tok, trust_remote_code=cfg.model.trust_remote_code, seed=cfg.optim.seed)
    return frozen(ref, cfg, cfg.ds.zero_stage, cfg.ds.offload)


def pair_logps(model, batch, share: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-probs of the answers (EOS included), chosen rows then rejected rows."""
    seq, attn, pos, p = prompt_answer_layout(batch)
    lp, _ = state_logprobs(model, seq, attn, pos, p - 1, 1.0, share)     # states P-1.. predict the answer tokens
    lp = (lp * attn[:, p:]).sum(-1)
    b = lp.shape[0] // 2
    return lp[:b], lp[b:]


def answer_lengths(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer tokens (EOS included) of the chosen rows and of the rejected rows."""
    n = (batch["end_index"] + 1 - batch["prompt_len"]).float()
    return n[:n.shape[0] // 2], n[n.shape[0] // 2:]


def scored_pairs(engine, ref, batch, share: bool) -> PairLogps:
    pc, pr = pair_logps(engine, batch, share)
    rc = rr = None
    if ref is not None:
        with torch.no_grad():
            rc, rr = pair_logps(ref, batch, share)
    return PairLogps(pc, pr, rc, rr, *answer_lengths(batch))


def make_step(cfg, ref):
    loss_fn, share = PREFERENCE_LOSSES[cfg.dpo.dpo_loss].fn, cfg.model.share_prompt_forward

    def step(engine, batch):
        loss, cw, rw = loss_fn(scored_pairs(engine, ref, batch, share), cfg.dpo)
        return loss, {"reward_acc": (cw > rw).float().mean().item(), "reward_margin": (cw - rw).mean().item()}
    return step


@torch.no_grad()
def evaluate(engine, ref, loader, cfg) -> dict:
    engine.eval()
    loss_fn = PREFERENCE_LOSSES[cfg.dpo.dpo_loss].fn
    loss = acc = margin = chosen = n = 0.0
    for batch in loader:
        batch = to_device(batch, engine.device)
        lo, cw, rw = loss_fn(scored_pairs(engine, ref, batch, cfg.model.share_prompt_forward), cfg.dpo)
        k = cw.numel()
        loss += lo.item() * k
        acc += (cw > rw).sum().item()
        margin += (cw - rw).sum().item()
        chosen += cw.sum().item()
        n += k
    loss, acc, margin, chosen, n = all_reduce_sum([loss, acc, margin, chosen, n])
    n = max(n, 1.0)
    return {"loss": loss / n, "reward_acc": acc / n, "reward_margin": margin / n, "chosen_reward": chosen / n}


def main(argv=None) -> dict:
    cfg = parse_config(argv, "DPO: preference optimisation against a frozen reference", stage="dpo")
    with StageRun(cfg, "dpo") as run_ctx:
        s = run_ctx.setup(2, load_causal_lm, lambda tok: PairCollator(tok.pad_token_id))
        loss = PREFERENCE_LOSSES[cfg.dpo.dpo_loss]
        engine, ref = s.engine, frozen_reference(cfg, s.tok) if loss.needs_reference else None
        run_ctx.log.info("preference loss %s (beta %g%s%s): %d optimizer steps", loss.name, cfg.dpo.beta,
                         f", label smoothing {cfg.dpo.label_smoothing:g}" if cfg.dpo.label_smoothing else "",
                         "" if ref is not None else ", no reference model", s.total)
        final = run(engine, s.train_loader, make_step(cfg, ref), lambda: evaluate(engine, ref, s.eval_loader, cfg),
                    cfg, run_ctx.writer, s.total, desc="dpo")
        save_hf(engine.module, s.tok, cfg.log.output_dir, cfg.ds.zero_stage)
        run_ctx.log.info("saved the DPO actor to %s", cfg.log.output_dir)
        run_ctx.summary(steps=s.total, final_eval=final, data=s.stats)
        return final


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
