"""DPO: the alternative second stage that turns the SFT model into a chat model directly.

Policy (trainable, DeepSpeed) and a frozen reference (the starting model unless
``--ref_model_name_or_path``) score the chosen and rejected answers of the phase-2 pairs;
``--beta``, ``--label_smoothing`` (conservative DPO) and ``--dpo_loss ipo`` as in the papers.
The result is saved like an SFT actor, so ``chat.py`` and Stage 3 can use it.

    python training/step2_reward_model_finetuning/dpo_main.py \\
        --model_name_or_path output/actor-models/smollm2-135m --output_dir output/actor-models/smollm2-135m-dpo
"""
from __future__ import annotations

import sys

import torch

from training.utils.config import parse_config
from training.utils.data import PairCollator
from training.utils.distributed import all_reduce_sum
from training.utils.deepspeed_setup import frozen
from training.utils.loop import run, to_device
from training.utils.model import load_causal_lm, save_hf
from training.utils.stage import StageRun, run_cli
from training.utils.losses import dpo_loss
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


def make_step(cfg, ref):
    d, share = cfg.dpo, cfg.model.share_prompt_forward

    def step(engine, batch):
        pc, pr = pair_logps(engine, batch, share)
        with torch.no_grad():
            rc, rr = pair_logps(ref, batch, share)
        loss, cw, rw = dpo_loss(pc, pr, rc, rr, d.beta, d.label_smoothing, d.dpo_loss)
        return loss, {"reward_acc": (cw > rw).float().mean().item(), "reward_margin": (cw - rw).mean().item()}
    return step


@torch.no_grad()
def evaluate(engine, ref, loader, cfg) -> dict:
    engine.eval()
    d = cfg.dpo
    loss = acc = margin = chosen = n = 0.0
    for batch in loader:
        batch = to_device(batch, engine.device)
        pc, pr = pair_logps(engine, batch, cfg.model.share_prompt_forward)
        rc, rr = pair_logps(ref, batch, cfg.model.share_prompt_forward)
        lo, cw, rw = dpo_loss(pc, pr, rc, rr, d.beta, d.label_smoothing, d.dpo_loss)
        k = pc.numel()
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
        engine, ref = s.engine, frozen_reference(cfg, s.tok)
        run_ctx.log.info("DPO (%s, beta %g, label smoothing %g): %d optimizer steps", cfg.dpo.dpo_loss, cfg.dpo.beta,
                         cfg.dpo.label_smoothing, s.total)
        final = run(engine, s.train_loader, make_step(cfg, ref), lambda: evaluate(engine, ref, s.eval_loader, cfg),
                    cfg, run_ctx.writer, s.total, desc="dpo")
        save_hf(engine.module, s.tok, cfg.log.output_dir, cfg.ds.zero_stage)
        run_ctx.log.info("saved the DPO actor to %s", cfg.log.output_dir)
        run_ctx.summary(steps=s.total, final_eval=final, data=s.stats)
        return final


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
