"""PPO updates on collected experience: clipped policy loss for the actor, clipped value loss for
the critic, optional unsupervised (SFT-slice) loss, EMA actor, adaptive KL."""
from __future__ import annotations

import itertools
import time
from typing import Optional

import torch

from .experience import Experience, action_logprobs, micro_batches
from .maths import AdaptiveKLController, causal_lm_loss, entropy_from_logits, masked_mean, policy_loss, value_loss


def finite_or_skip(loss: torch.Tensor, guard, what: str) -> bool:
    """False (and counted by ``guard``) when ``loss`` is not finite on some rank: skip the update."""
    if guard is not None:
        return guard.check(loss, what)
    from ..loop import all_finite

    if not all_finite(loss):
        raise FloatingPointError(f"non-finite {what}")
    return True


class EMA:
    """Exponential moving average of the actor's parameters (CPU fp32, rank 0 keeps the copy)."""

    def __init__(self, module, decay: float, zero_stage: int):
        self.decay, self.zero_stage = decay, zero_stage
        self.shadow = {n: t.clone() for n, t in self._full(module).items()}

    def _full(self, module) -> dict:
        out = {}
        for n, p in module.named_parameters():
            if self.zero_stage == 3:
                import deepspeed

                with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                    out[n] = p.detach().float().cpu().clone()
            else:
                out[n] = p.detach().float().cpu()
        return out

    def update(self, module) -> None:
        for n, t in self._full(module).items():
            self.shadow[n].mul_(self.decay).add_(t, alpha=1.0 - self.decay)


class PPOTrainer:
    def __init__(self, hybrid, critic, ppo_cfg, actor_zero_stage: int, unsup_iter=None):
        self.he, self.critic, self.c = hybrid, critic, ppo_cfg
        self.kl = AdaptiveKLController(ppo_cfg.kl_coef, ppo_cfg.kl_target, ppo_cfg.kl_horizon) if ppo_cfg.adaptive_kl else None
        self.ema: Optional[EMA] = EMA(hybrid.module, ppo_cfg.ema_decay, actor_zero_stage) if ppo_cfg.enable_ema else None
        self.unsup_iter = unsup_iter
        self.guard = None      # a loop.NonFinite, set by the stage

    def state_dict(self) -> dict:
        """What a resumed run needs besides the engines (the EMA weights go to their own file)."""
        return {"kl_coef": self.kl.value} if self.kl is not None else {}

    def load_state_dict(self, st: dict, ckpt_dir=None) -> None:
        if "kl_coef" in st and self.kl is not None:
            self.kl.value = st["kl_coef"]
        if self.ema is not None and ckpt_dir is not None and (ckpt_dir / "ema.safetensors").is_file():
            from .. import checkpoint

            self.ema.shadow = checkpoint.load_tensors(ckpt_dir, "ema.safetensors")

    def kl_coef(self) -> float:
        return self.kl.value if self.kl is not None else self.c.kl_coef

    def actor_step(self, e: Experience) -> dict:
        logits, logp, start = action_logprobs(self.he.engine, e.sequences, e.attention_mask, e.position_ids,
                                              e.action_mask, self.c.temperature)
        loss, clipfrac = policy_loss(logp, e.old_logp, e.advantages, e.action_mask, self.c.cliprange,
                                     self.c.eps_clip_high)
        if not finite_or_skip(loss, self.guard, "actor loss"):
            return {}
        engine = self.he.engine
        engine.backward(loss)
        engine.step()
        with torch.no_grad():
            ent = masked_mean(entropy_from_logits(logits.detach()), e.action_mask[:, start:]).item()
            approx_kl = masked_mean(e.old_logp - logp.detach(), e.action_mask).item()
        return {"actor_loss": loss.item(), "clip_frac": clipfrac.item(), "entropy": ent, "approx_kl": approx_kl}

    def critic_step(self, e: Experience) -> dict:
        values = self.critic(e.sequences, e.attention_mask, e.position_ids)[:, :-1].float()
        loss = value_loss(values, e.values, e.returns, e.action_mask, self.c.cliprange_value)
        if not finite_or_skip(loss, self.guard, "critic loss"):
            return {}
        self.critic.backward(loss)
        self.critic.step()
        return {"critic_loss": loss.item()}

    def unsup_step(self, batch: dict) -> dict:
        engine = self.he.engine
        logits = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        loss = causal_lm_loss(logits, batch["labels"]) * self.c.unsup_coef
        engine.backward(loss)
        engine.step()
        return {"unsup_loss": loss.item() / self.c.unsup_coef}

    def train(self, exps: list[Experience], iteration: int, micro_batch: int, device) -> dict:
        t0 = time.time()
        self.he.train()
        self.critic.train()
        acc: dict = {}
        warm = iteration < self.c.critic_warmup_steps
        for _ in range(self.c.ppo_epochs):
            for exp in exps:
                for e in micro_batches(exp, micro_batch):
                    m = {} if warm else self.actor_step(e)
                    m.update(self.critic_step(e))
                    if self.unsup_iter is not None and self.c.unsup_coef > 0 and not warm:
                        batch = {k: v.to(device) for k, v in next(self.unsup_iter).items()}
                        m.update(self.unsup_step(batch))
                    for k, v in m.items():
                        acc.setdefault(k, []).append(v)
        if self.ema is not None and not warm:
            self.ema.update(self.he.module)
        out = {k: sum(v) / len(v) for k, v in acc.items()}
        out["train_s"] = time.time() - t0
        out["kl_coef"] = self.kl_coef()
        return out

    def after_rollouts(self, mean_kl: float, n: int) -> None:
        if self.kl is not None:
            self.kl.update(mean_kl, n)


def cycle(loader):
    """Endless iteration over a DataLoader, advancing the sampler's epoch each pass."""
    for epoch in itertools.count():
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader
