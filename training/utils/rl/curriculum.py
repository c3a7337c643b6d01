"""Prompt curriculum: rollout batches drawn by group, towards the groups whose answers still disagree.

A group-relative advantage (GRPO, RLOO, PPO with a group baseline) is zero for a prompt whose answers
all score the same: a prompt the policy always passes, or one it never passes, costs its rollouts and
teaches nothing. The curriculum estimates, for every group of prompts (the rows' ``--balance_key``
field, e.g. the bundled data's task), how much the answers to one of its prompts disagree (their
standard deviation, the "spread"), and draws each prompt's group with probability

    w_g / sum(w),   w_g = s_g + floor x mean(s),   s_g = (S_g + prior x m) / (N_g + prior)

``S_g`` and ``N_g`` are the group's sum of observed spreads and its number of observed prompts, both
multiplied by ``decay`` at every rollout batch (older batches count less as the policy moves); ``m``
is the mean spread over all groups, and ``prior`` pseudo-prompts at ``m`` keep one unlucky batch from
starving a group (four failures out of four happen a quarter of the time at a 30% pass-rate). A
group never seen counts ``m``; ``floor`` keeps the settled groups in view, so a group that starts
to disagree again is noticed. Within a group the prompts come in a seeded shuffled order, reshuffled
when used up. With several ranks the observations are summed over the ranks, and the groups are
drawn alike on every rank, each rank taking its prompts from its own share of the group.

No DeepSpeed here; ``torch`` only. The loader is a ``DataLoader`` whose ``batch_sampler`` is the
curriculum (``loader()``): each ``next`` draws with the weights of that moment.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch


class PromptCurriculum:
    """Batches of row indices (``batch_size`` each), groups drawn by reward spread; see the module doc."""

    def __init__(self, groups: Sequence[str], batch_size: int, seed: int, decay: float = 0.8, prior: float = 2.0,
                 floor: float = 0.1, rank: int = 0, world: int = 1,
                 reduce: Callable[[list[float]], list[float]] = lambda x: x):
        self.names = sorted(set(groups))
        self.index = {name: k for k, name in enumerate(self.names)}
        rows = [[i for i, g in enumerate(groups) if g == name] for name in self.names]
        # each rank draws from its own share of every group (all of it when the group is smaller than the
        # world); the group picks, the spreads and the positions are the same on every rank, so the
        # state rank 0 saves resumes every rank
        self.rows = [r[rank::world] if len(r) >= world else r for r in rows]
        self.batch_size, self.seed, self.reduce = batch_size, seed, reduce
        self.decay, self.prior, self.floor = decay, prior, floor
        self.sums = torch.zeros(len(self.names), dtype=torch.float64)     # S_g: decayed sum of observed spreads
        self.counts = torch.zeros(len(self.names), dtype=torch.float64)   # N_g: decayed number of observed prompts
        self.gen = torch.Generator().manual_seed(seed)
        self.cycle = [0] * len(self.rows)            # passes through each group so far
        self.pos = [0] * len(self.rows)              # position in the current pass

    def spread(self) -> torch.Tensor:
        """s_g: each group's estimated spread, pulled towards the all-group mean by ``prior``."""
        n = float(self.counts.sum())
        m = float(self.sums.sum()) / n if n > 0 else 1.0
        return (self.sums + self.prior * m) / (self.counts + self.prior) if self.prior > 0 else \
            torch.where(self.counts > 0, self.sums / self.counts.clamp_min(1e-12), torch.full_like(self.sums, m))

    def weights(self) -> torch.Tensor:
        """Probability of each group (in ``names`` order) for the next draw."""
        s = self.spread()
        if float(s.sum()) <= 0:                      # nothing disagrees anywhere: uniform
            return torch.full_like(s, 1.0 / len(s))
        w = s + self.floor * s.mean()
        return w / w.sum()

    def draw(self) -> list[int]:
        picks = torch.multinomial(self.weights(), self.batch_size, replacement=True, generator=self.gen)
        return [self._next_row(int(g)) for g in picks]

    def _order(self, g: int) -> torch.Tensor:
        """The shuffled order of group g's rows in its current pass (a function of seed, group, pass)."""
        gen = torch.Generator().manual_seed(self.seed * 1000003 + g * 7919 + self.cycle[g])
        return torch.randperm(len(self.rows[g]), generator=gen)

    def _next_row(self, g: int) -> int:
        if self.pos[g] == len(self.rows[g]):
            self.cycle[g], self.pos[g] = self.cycle[g] + 1, 0
        row = self.rows[g][int(self._order(g)[self.pos[g]])]
        self.pos[g] += 1
        return row

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield self.draw()

    def observe(self, groups: Sequence[str], spread: torch.Tensor) -> None:
        """Fold one rollout batch in: ``groups`` [P] the prompts' groups, ``spread`` [P] the standard
        deviation of each prompt's answer scores. Every rank calls it once per rollout batch."""
        n = len(self.names)
        sums, counts = [0.0] * n, [0.0] * n
        for g, s in zip(groups, spread.detach().double().cpu().tolist()):
            if s == s:                               # a non-finite batch is skipped by the loop, not averaged
                sums[self.index[g]] += s
                counts[self.index[g]] += 1
        both = self.reduce(sums + counts)
        self.sums = self.decay * self.sums + torch.tensor(both[:n], dtype=torch.float64)
        self.counts = self.decay * self.counts + torch.tensor(both[n:], dtype=torch.float64)

    def metrics(self) -> dict[str, float]:
        """The draw probability of every group, for the training log."""
        return {f"curriculum/{name}": float(w) for name, w in zip(self.names, self.weights())}

    def state_dict(self) -> dict:
        return {"names": list(self.names), "sums": self.sums.tolist(), "counts": self.counts.tolist(),
                "gen": self.gen.get_state().tolist(), "cycle": list(self.cycle), "pos": list(self.pos)}

    def load_state_dict(self, st: dict) -> None:
        if st["names"] != self.names:
            raise ValueError(f"the checkpoint's curriculum groups {st['names']} differ from this run's {self.names}")
        self.sums = torch.tensor(st["sums"], dtype=torch.float64)
        self.counts = torch.tensor(st["counts"], dtype=torch.float64)
        self.gen.set_state(torch.tensor(st["gen"], dtype=torch.uint8))
        self.cycle, self.pos = list(st["cycle"]), list(st["pos"])


def prompt_spread(score: torch.Tensor, n: int) -> torch.Tensor:
    """[B] scores of P prompts x n answers (a prompt's answers consecutive) -> [P] their standard deviation."""
    return score.view(-1, n).std(1)


def loader(ds, curriculum: PromptCurriculum, collate):
    """A DataLoader over ``ds`` that draws every batch from ``curriculum`` (endless)."""
    from torch.utils.data import DataLoader

    # its own generator: starting an iterator draws a seed, which must not come from (and shift) the
    # global RNG stream that sampling uses; a resumed run starts its iterator at another point of it
    return DataLoader(ds, batch_sampler=curriculum, collate_fn=collate, generator=torch.Generator().manual_seed(0))


def from_config(cfg, train_ds, collate, log):
    """The prompt curriculum and its endless prompt batches (``--prompt_curriculum``), or (None, None)."""
    from ..distributed import all_reduce_sum, rank, world_size

    c = cfg.rl
    if not c.curriculum.prompt_curriculum:
        return None, None
    if "group" not in train_ds.column_names:
        log.info("prompt curriculum off: no row of the data has the --balance_key column '%s'", cfg.data.balance_key)
        return None, None
    k = c.curriculum
    curriculum = PromptCurriculum(train_ds["group"], c.rollout.per_device_generation_batch_size, cfg.optim.seed,
                                  k.curriculum_decay, k.curriculum_prior, k.curriculum_floor, rank(), world_size(),
                                  all_reduce_sum)
    return curriculum, loader(train_ds, curriculum, collate)
