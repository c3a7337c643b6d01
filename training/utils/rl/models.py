"""The models of stage 3: the actor on the Hybrid Engine, the frozen reference, the reward sources
(a frozen reward model among them) and, for PPO, the critic initialised from the reward model."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from ..deepspeed_setup import build_train_engine, frozen
from ..hybrid_engine import HybridEngine
from ..model import ValueModel, apply_lora, load_causal_lm, load_reward_model
from ..model.reward import head
from .advantages import Algorithm
from ..reward_sources import build_reward


def build_actor(cfg, tok, updates: int) -> HybridEngine:
    c = cfg.rl
    actor_cfg = replace(
        cfg, optim=replace(cfg.optim, per_device_train_batch_size=c.loss.per_device_training_batch_size)
    )
    actor = load_causal_lm(cfg.model.model_name_or_path, tok, trust_remote_code=cfg.model.trust_remote_code,
                           dropout=0.0 if c.disable_actor_dropout else cfg.model.dropout, seed=cfg.optim.seed)
    return HybridEngine(build_train_engine(apply_lora(actor, cfg.lora), actor_cfg, updates), tok, cfg.ds.zero_stage)


def build_reference(cfg, tok, algorithm: Algorithm):
    """The frozen reference model, when the algorithm reads one (a KL term, PPO, online DPO's loss), else None."""
    c = cfg.rl
    if not algorithm.needs_reference:
        return None
    stage = 3 if cfg.ds.zero_stage == 3 or c.offload_reference_model else 0
    return frozen(load_causal_lm(cfg.model.model_name_or_path, tok, trust_remote_code=cfg.model.trust_remote_code,
                                 seed=cfg.optim.seed), cfg, stage, c.offload_reference_model)


def build_reward_sources(cfg, tok, refreshes: int = 0):
    """(the weighted sum of ``--reward`` sources, the reward models it loaded): a reward model is loaded
    frozen (``reward_zero_stage``), or, when ``refreshes`` > 0 (iterated RLHF), as a DeepSpeed training
    engine for that many refreshes of ``reward_refresh_steps`` steps at a constant rate."""
    r, loaded = cfg.rewards, []

    def load(path):
        model = ValueModel(load_reward_model(path, tok))
        if refreshes:
            rm_cfg = replace(cfg, optim=replace(cfg.optim, per_device_train_batch_size=r.reward_refresh_batch,
                                                learning_rate=r.reward_refresh_learning_rate, num_warmup_steps=0,
                                                lr_scheduler_type="constant", gradient_accumulation_steps=1),
                             lora=replace(cfg.lora, lora_dim=0, only_optimize_lora=False))
            loaded.append(build_train_engine(model, rm_cfg, refreshes * r.reward_refresh_steps,
                                             zero_stage=r.reward_zero_stage))
            loaded[-1].eval()
        else:        # --offload_reward_model: ZeRO-3 with the parameters in CPU memory, as the reference's
            off = cfg.rl.offload_reward_model
            loaded.append(frozen(model, cfg, 3 if off else r.reward_zero_stage, off))
        return loaded[-1]
    reward = build_reward(r.reward, r.reward_weights, timeout=r.reward_timeout,
                          default_model=r.reward_model_name_or_path, load_model=load)
    return reward, loaded


def build_critic(cfg, tok, updates: int, algorithm: Algorithm):
    """PPO's critic (None for the critic-free algorithms): a value model started from
    ``critic_model_name_or_path``, else the reward model, else the actor; its head always trains."""
    c = cfg.rl
    if not algorithm.critic:
        return None
    name = c.critic.critic_model_name_or_path or cfg.rewards.reward_model_name_or_path or cfg.model.model_name_or_path
    k = c.critic
    critic_cfg = replace(
        cfg,
        optim=replace(
            cfg.optim,
            per_device_train_batch_size=c.loss.per_device_training_batch_size,
            learning_rate=k.critic_learning_rate,
            weight_decay=k.critic_weight_decay,
        ),
        lora=replace(
            cfg.lora,
            lora_dim=k.critic_lora_dim,
            only_optimize_lora=k.critic_lora_dim > 0,
            lora_module_name=c.critic.critic_lora_module_name,
            lora_learning_rate=c.critic.critic_lora_learning_rate,
        ),
        model=replace(cfg.model, gradient_checkpointing=c.critic.critic_gradient_checkpointing),
    )
    model = apply_lora(load_reward_model(name, tok, seed=cfg.optim.seed,
                                         dropout=0.0 if c.critic.disable_critic_dropout else c.critic.critic_dropout),
                       critic_cfg.lora)
    for p in head(model).parameters():
        p.requires_grad_(True)  # the value head trains even when only the LoRA weights do
    return build_train_engine(ValueModel(model), critic_cfg, updates, zero_stage=c.critic.critic_zero_stage)


@dataclass
class Models:
    """Stage 3's models: the actor's Hybrid Engine, the frozen reference (None when no KL term, PPO or DPO
    loss reads it), the weighted reward sources with the reward models they loaded, and PPO's critic."""
    actor: HybridEngine
    reference: Optional[object] = None
    reward: object = None
    reward_models: list = field(default_factory=list)
    critic: Optional[object] = None


def build_models(cfg, tok, algorithm: Algorithm, updates: int, refreshes: int = 0) -> Models:
    """Every model of stage 3, in this order: actor, reference, reward sources, critic."""
    actor = build_actor(cfg, tok, updates)
    ref = build_reference(cfg, tok, algorithm)
    reward, reward_models = build_reward_sources(cfg, tok, refreshes)
    return Models(actor, ref, reward, reward_models, build_critic(cfg, tok, updates, algorithm))
