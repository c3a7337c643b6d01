"""The pipeline's algorithms (``train.py --algo``), one record each: which stages run, what stage 2 trains, the
flags each stage is given and the preset it starts from.

Two registries feed it, and a new entry in either is an algorithm here at once:

- ``rl/advantages.ESTIMATORS``: the stage-3 algorithms. PPO (a critic) runs stages 1, 2 and 3; the
  critic-free ones (GRPO, RLOO, ...) run stages 1 and 3, rewarded by their preset's rule.
- ``losses.PREFERENCE_LOSSES``: the offline losses (DPO's ``sigmoid``, named ``dpo`` here, and IPO, KTO,
  SimPO, ORPO). Stage 2 trains the SFT actor on preference pairs; there is no reward model and no stage 3.

Nothing else compares an algorithm's name: ``launch/plan.py`` and ``presets.py`` read the record.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import ConfigError
from .losses import PREFERENCE_LOSSES
from .rl.advantages import ESTIMATORS


@dataclass(frozen=True)
class AlgorithmSpec:
    name: str
    stages: tuple[int, ...]     # the stages train.py runs by default
    offline: bool = False       # stage 2 trains the actor on preference pairs with ``loss``; no stage 3
    critic: bool = False        # stage 3 trains a critic on the reward model's scores (PPO)
    loss: str = ""              # offline: its preference loss (the stage's --dpo_loss)
    preset: str = ""            # the algorithm whose preset file it shares when it has none of its own

    def own_preset(self, step: int) -> bool:
        """Whether stage ``step`` starts from this algorithm's preset rather than the pipeline's stage preset:
        the offline losses' stage 2 and every critic-free stage 3."""
        return step == 2 and self.offline or step == 3 and not self.offline and not self.critic

    def stage_flags(self, step: int) -> list[str]:
        """What stage ``step`` is told of the algorithm."""
        if step == 2 and self.offline:
            return ["--dpo_loss", self.loss]
        return ["--algo", self.name] if step == 3 and not self.offline else []


def _offline(loss: str) -> AlgorithmSpec:
    return AlgorithmSpec("dpo" if loss == "sigmoid" else loss, (1, 2), offline=True, loss=loss, preset="dpo")


def _online(name: str) -> AlgorithmSpec:
    critic = ESTIMATORS[name].critic
    return AlgorithmSpec(name, (1, 2, 3) if critic else (1, 3), critic=critic, preset="" if critic else "grpo")


ALGORITHMS: dict[str, AlgorithmSpec] = {
    a.name: a for a in [*map(_online, ESTIMATORS), *map(_offline, PREFERENCE_LOSSES)]
}


def algorithm_spec(name: str) -> AlgorithmSpec:
    """The record behind ``--algo``."""
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown algo {name!r}: choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def described() -> str:
    """``train.py --algo``'s help: the algorithms by what they run."""
    crit = [a.name for a in ALGORITHMS.values() if a.critic]
    free = [a.name for a in ALGORITHMS.values() if not a.critic and not a.offline]
    off = [a.name for a in ALGORITHMS.values() if a.offline]
    return (f"{'/'.join(crit)}: stage 2 trains a reward model, stage 3 runs PPO with a critic; {'/'.join(free)}: "
            f"stage 3 without a critic, rewarded by the rule in the preset (the bundled checker), so stages 1 and 3; "
            f"{'/'.join(off)}: stage 2 trains the SFT actor on preference pairs with that offline loss (dpo: DPO's "
            f"sigmoid loss), so stages 1 and 2")
