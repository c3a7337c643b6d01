"""Updates on collected experience, one path for every algorithm: the clipped policy loss (or, for
online DPO, the DPO loss on ranked pairs) for the actor, with the KL to the reference as a k3 loss
term when it is not in the reward; the clipped value loss when there is a critic; the optional
unsupervised (SFT-slice) loss; the EMA actor and the adaptive KL controller."""
from __future__ import annotations

import itertools
import time
from typing import Iterator, Optional

import torch

from ..losses import causal_lm_loss
from .advantages import Algorithm
from .experience import Experience
from .hooks import KLCoef
from .maths import aggregate, kl_estimate, logprob_gap, masked_mean, value_loss
from .residency import Residency
from .sequences import action_logprobs, micro_batches, pairs_in_order


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


class RLTrainer:
    """The actor (a Hybrid Engine) and, for PPO, the critic engine; ``guard`` (a ``loop.NonFinite``)
    skips non-finite losses; ``unsup_iter`` yields SFT batches when ``unsup_coef`` > 0."""

    def __init__(self, cfg, *, algorithm: Algorithm, models, kl: KLCoef, guard=None,
                 unsup_iter: Optional[Iterator[dict]] = None, residency: Optional[Residency] = None):
        """``cfg``: the run's config (its rl section, the actor's ZeRO stage, the answer length, DPO's beta, the
        shared-prompt forward); ``models``: ``models.Models`` (the actor's Hybrid Engine, the critic's engine or
        None, whether a reference exists); ``kl``: the KL coefficient, shared with the experience maker."""
        actor, critic, has_ref = models.actor, models.critic, models.reference is not None
        self.kl = kl
        rl_cfg, actor_zero_stage, max_new_tokens, dpo_beta = cfg.rl, cfg.ds.zero_stage, cfg.data.max_answer_seq_len, \
            cfg.dpo.beta
        self.share = cfg.model.share_prompt_forward  # a group's prompt runs once per forward
        self.he, self.critic, self.c, self.guard, self.unsup_iter = actor, critic, rl_cfg, guard, unsup_iter
        self.actor_zero_stage = actor_zero_stage
        self.resident = residency or Residency(False, torch.device("cpu"), {})
        self.est, self.loss = algorithm.estimator, algorithm.loss
        self.max_new_tokens, self.dpo_beta, self.has_ref = max_new_tokens, dpo_beta, has_ref
        self.kl_in_reward, self.loss_agg = algorithm.kl_in_reward, algorithm.loss_agg
        ema = rl_cfg.ema
        self.ema: Optional[EMA] = EMA(actor.module, ema.ema_decay, actor_zero_stage) if ema.enable_ema else None

    def describe(self) -> str:
        c = self.c
        critic = f", critic ZeRO-{c.critic.critic_zero_stage}" if self.critic is not None else ""
        return (
            f"updates: policy loss {self.loss.name} ({self.loss_agg} reduction), {c.loss.ppo_epochs} epoch(s) of "
            f"micro-batches of {c.loss.per_device_training_batch_size}, actor ZeRO-{self.actor_zero_stage}{critic}; "
            f"KL coef {c.kl.kl_coef:g}{' (adaptive)' if self.kl.adaptive else ''}"
            f"{'; EMA actor' if self.ema is not None else ''}"
            f"{f'; unsupervised loss x {c.ptx.unsup_coef:g}' if self.unsup_iter is not None else ''}"
        )

    def engines(self) -> dict:
        """The engines a checkpoint holds: the actor's, and the critic."""
        return {"actor": self.he.engine, **({"critic": self.critic} if self.critic is not None else {})}

    def load_state_dict(self, ckpt_dir) -> None:
        """The EMA weights of a resumed run (their own file in the checkpoint; the KL coefficient is a hook's)."""
        if self.ema is not None and ckpt_dir is not None and (ckpt_dir / "ema.safetensors").is_file():
            from .. import checkpoint

            self.ema.shadow = checkpoint.load_tensors(ckpt_dir, "ema.safetensors")

    def _apply(self, loss: torch.Tensor, what: str) -> bool:
        if not finite_or_skip(loss, self.guard, what):
            return False
        self.he.engine.backward(loss)
        self.he.engine.step()
        return True

    def policy_step(self, e: Experience) -> dict:
        """The run's policy loss (``policy_losses.py``: the clipped surrogate, dual-clip, GSPO's sequence
        ratio, or DPO on ranked pairs) on the experience's advantages, plus kl_coef x k3 KL to the
        reference when the KL is neither in the reward nor in the loss itself (DPO's)."""
        c = self.c
        logp, ent, start = action_logprobs(self.he.engine, e.sequences, e.attention_mask, e.position_ids,
                                              e.action_mask, c.rollout.temperature, self.share)
        old = e.old_logp if e.old_logp is not None else logp.detach()      # None: the one on-policy update
        # TIS: a positive per-token weight on the advantage scales that token's term of every policy loss
        adv = e.advantages * e.is_weight if e.is_weight is not None else e.advantages
        loss, out = self.loss.fn(logp, old, adv, e.action_mask, clip_low=c.loss.cliprange,
                                 clip_high=c.loss.eps_clip_high, agg=self.loss_agg, length=self.max_new_tokens,
                                 dual_clip_c=c.loss.dual_clip_c, ref_logp=e.ref_logp, beta=self.dpo_beta)
        out = {"pg_loss": loss.item(), **out}
        if e.old_logp is None and e.rollout_logp is not None:  # the on-policy update: its forward is the training side
            out.update(logprob_gap(e.rollout_logp, logp.detach(), e.action_mask))
        if self.kl.value > 0 and not self.kl_in_reward and self.has_ref and not self.loss.pairs:
            kl_term = aggregate(kl_estimate(logp, e.ref_logp, "k3"), e.action_mask, self.loss_agg, self.max_new_tokens)
            loss = loss + self.kl.value * kl_term
            out["kl_loss"] = kl_term.item()
        if not self._apply(loss, "policy loss"):
            return {}
        with torch.no_grad():
            out["entropy"] = masked_mean(ent, e.action_mask[:, start:]).item()
            out["approx_kl"] = masked_mean(old - logp.detach(), e.action_mask).item()
        out["actor_loss"] = loss.item()
        return out

    def critic_step(self, e: Experience) -> dict:
        values = self.critic(e.sequences, e.attention_mask, e.position_ids)[:, :-1].float()
        loss = value_loss(values, e.values, e.returns, e.action_mask, self.c.critic.cliprange_value)
        if not finite_or_skip(loss, self.guard, "critic loss"):
            return {}
        self.critic.backward(loss)
        self.critic.step()
        return {"critic_loss": loss.item()}

    def unsup_step(self, batch: dict) -> dict:
        """PPO-ptx: ``unsup_coef`` x the language-model loss of an SFT batch, skipped when not finite."""
        engine = self.he.engine
        logits = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        loss = causal_lm_loss(logits, batch["labels"]) * self.c.ptx.unsup_coef
        if not self._apply(loss, "unsupervised loss"):
            return {}
        return {"unsup_loss": loss.item() / self.c.ptx.unsup_coef}

    def train(self, exps: list[Experience], iteration: int, micro_batch: int, device) -> dict:
        """``ppo_epochs`` passes over the iteration's experiences in micro-batches; the first
        ``critic_warmup_steps`` iterations (0-based ``iteration``) update the critic only."""
        t0 = time.time()
        self.resident.use("critic")                  # the updates: actor and critic
        self.he.train()
        if self.critic is not None:
            self.critic.train()
        pairs = self.loss.pairs
        group = self.c.rollout.num_samples_per_prompt if self.share else 1
        warm = iteration < self.c.critic.critic_warmup_steps and self.critic is not None
        acc: dict = {}
        for _ in range(self.c.loss.ppo_epochs):
            for exp in exps:
                for e in (pairs_in_order(exp, micro_batch) if pairs else micro_batches(exp, micro_batch, group)):
                    m = {} if warm else self.policy_step(e)
                    if self.critic is not None:
                        m.update(self.critic_step(e))
                    if self.unsup_iter is not None and self.c.ptx.unsup_coef > 0 and not warm:
                        batch = {k: v.to(device) for k, v in next(self.unsup_iter).items()}
                        m.update(self.unsup_step(batch))
                    for k, v in m.items():
                        acc.setdefault(k, []).append(v)
        if self.ema is not None and not warm:
            self.ema.update(self.he.module)
        out = {k: sum(v) / len(v) for k, v in acc.items()}
        out["train_s"] = time.time() - t0
        out["kl_coef"] = self.kl.value
        return out


def cycle(loader):
    """Endless iteration over a DataLoader, advancing the sampler's epoch each pass."""
    for epoch in itertools.count():
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader


class Counted:
    """An iterator that counts what it has handed out (the SFT batches a resumed run skips)."""

    def __init__(self, it: Iterator):
        self.it, self.used = it, 0

    def __iter__(self):
        return self

    def __next__(self):
        x = next(self.it)
        self.used += 1
        return x


def ptx_batches(cfg, phase_data, tok, log) -> Optional[Counted]:
    """InstructGPT's PPO-ptx data (None without ``--unsup_coef``): blocks of ``--unsupervised_dataset_name``,
    else the SFT slice (``phase_data(tok, 1)``), as endless micro-batches counted for ``--resume``."""
    from ..data import SFTCollator
    from ..loop import make_loader

    p = cfg.rl.ptx
    if p.unsup_coef <= 0:
        return None
    if p.unsupervised_dataset_name:
        from datasets import Dataset

        from ..data.unsupervised import unsupervised_rows

        block = cfg.data.max_prompt_seq_len + cfg.data.max_answer_seq_len
        ds = Dataset.from_list(unsupervised_rows(p.unsupervised_dataset_name, p.unsupervised_dataset_config_name, tok,
                                                 block, p.preprocessing_num_workers))
        log.info("unsupervised loss (coef %g): %d blocks of %d tokens from %s", p.unsup_coef, len(ds), block,
                 p.unsupervised_dataset_name)
    else:
        ds, _, _ = phase_data(tok, 1)
    micro = cfg.rl.loss.per_device_training_batch_size
    return Counted(cycle(make_loader(ds, micro, SFTCollator(tok.pad_token_id), True, cfg.optim.seed)))
