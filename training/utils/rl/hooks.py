"""Stage 3's optional features as hooks: each is built from its own config section when it is on, and the loop
(``runner.RLLoop``) calls every hook at fixed points of an iteration:

    before_iteration(it)              the iteration starts
    after_rollout(batch, maker)       each rollout batch was scored (``maker.spread``: its per-prompt spread)
    after_scoring() -> metrics        the iteration's rollouts are in, before the update
    after_update(it, metrics) -> metrics    the policy (and critic) updated; ``metrics`` so far
    after_iteration(it)               the iteration's metrics are complete
    state_dict() / rank_state_dict() / load_state_dict(state)    what a checkpoint keeps of it
    engines() -> {name: engine}       DeepSpeed engines of its own that a checkpoint saves

The prompts (shuffled epochs, or the curriculum) are a hook too: ``next_batch()`` gives the loop its prompts.
The KL coefficient is one object (``KLCoef``) that the experience maker and the trainer both read and the loop
updates.
"""
from __future__ import annotations

import logging
from typing import Optional

from .maths import AdaptiveKLController

log = logging.getLogger("speedchat")


class Hook:
    """Does nothing at every point; a feature overrides the points it needs."""

    def before_iteration(self, it: int) -> None:
        pass

    def after_rollout(self, batch: dict, maker) -> None:
        pass

    def after_scoring(self) -> dict:
        return {}

    def after_update(self, it: int, metrics: dict) -> dict:
        return {}

    def after_iteration(self, it: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def rank_state_dict(self) -> dict:
        return {}

    def load_state_dict(self, st: dict) -> None:
        pass

    def engines(self) -> dict:
        return {}


class KLCoef(Hook):
    """The KL coefficient: fixed (``--kl_coef``), or adapted after every iteration to ``--kl_target``
    (Ziegler et al.'s controller, ``--adaptive_kl``) from the iteration's mean KL over ``rows`` answers."""

    def __init__(self, kl_cfg, rows: int):
        self.fixed, self.rows = kl_cfg.kl_coef, rows
        self.ctl = AdaptiveKLController(kl_cfg.kl_coef, kl_cfg.kl_target, kl_cfg.kl_horizon) \
            if kl_cfg.adaptive_kl else None

    @property
    def adaptive(self) -> bool:
        return self.ctl is not None

    @property
    def value(self) -> float:
        return self.ctl.value if self.ctl is not None else self.fixed

    def after_update(self, it: int, metrics: dict) -> dict:
        if self.ctl is not None and "kl" in metrics:
            self.ctl.update(metrics["kl"], self.rows)
        return {}

    def state_dict(self) -> dict:
        return {"kl_coef": self.ctl.value} if self.ctl is not None else {}

    def load_state_dict(self, st: dict) -> None:
        if "kl_coef" in st and self.ctl is not None:
            self.ctl.value = st["kl_coef"]


class ShuffledPrompts(Hook):
    """Prompt batches from the shuffled prompt loader, epoch after epoch; a resumed run skips the batches the
    run had drawn."""

    def __init__(self, batches, generation_batches: int):
        self.batches, self.generation_batches, self.drawn = batches, generation_batches, 0

    def next_batch(self) -> dict:
        self.drawn += 1
        return next(self.batches)

    def state_dict(self) -> dict:
        return {"prompt_batches": self.drawn}

    def load_state_dict(self, st: dict) -> None:
        self.drawn = st.get("prompt_batches", st["step"] * self.generation_batches)
        for _ in range(self.drawn):
            next(self.batches)


class CurriculumPrompts(ShuffledPrompts):
    """Prompt batches drawn by the prompt curriculum (``curriculum.py``, ``--prompt_curriculum``): every
    rollout batch's per-prompt reward spread updates the groups' draw weights, logged each iteration."""

    def __init__(self, curriculum, batches, generation_batches: int):
        super().__init__(batches, generation_batches)
        self.curriculum = curriculum

    def after_rollout(self, batch: dict, maker) -> None:
        self.curriculum.observe(batch["group"], maker.spread)

    def after_scoring(self) -> dict:
        return self.curriculum.metrics()

    def state_dict(self) -> dict:
        return {"prompt_batches": self.drawn, "curriculum": self.curriculum.state_dict()}

    def load_state_dict(self, st: dict) -> None:
        if "curriculum" not in st:
            raise RuntimeError("written without --prompt_curriculum; resume with the settings of the run that "
                               "wrote it")
        self.curriculum.load_state_dict(st["curriculum"])
        self.drawn = st.get("prompt_batches", 0)


class PtxBatches(Hook):
    """PPO-ptx's language-model batches (``--unsup_coef``): the trainer draws them; a resumed run skips the
    batches used before the checkpoint."""

    def __init__(self, unsup):
        self.unsup = unsup           # trainer.Counted

    def state_dict(self) -> dict:
        return {"unsup_batches": self.unsup.used}

    def load_state_dict(self, st: dict) -> None:
        for _ in range(st.get("unsup_batches", 0)):
            next(self.unsup)


class Refresh(Hook):
    """Iterated RLHF (``--reward_refresh_interval``): every N iterations the reward model trains on the labelled
    rollouts since the last refresh (``labels/refresh.RewardRefresh``); it is then moved to the device first."""

    def __init__(self, refresh, engine, residency):
        self.refresh, self.engine, self.resident = refresh, engine, residency

    def after_update(self, it: int, metrics: dict) -> dict:
        if not self.refresh.due(it):
            return {}
        self.resident.use("reward")
        return self.refresh(it)

    def rank_state_dict(self) -> dict:
        return self.refresh.state_dict()

    def load_state_dict(self, st: dict) -> None:
        self.refresh.load_state_dict(st)

    def engines(self) -> dict:
        return {"reward": self.engine}


class Fault(Hook):
    """``--fault`` (tests of the failure paths): the reward, a ``faults.Faulty`` wrapper, learns the iteration
    it scores, so that a fault planned for an iteration fires there."""

    def __init__(self, faulty):
        self.faulty = faulty

    def before_iteration(self, it: int) -> None:
        self.faulty.iteration = it

    def after_iteration(self, it: int) -> None:
        self.faulty.iteration = 0


def optional(*hooks: Optional[Hook]) -> list[Hook]:
    """The hooks of the features that are on (None: off)."""
    return [h for h in hooks if h is not None]
