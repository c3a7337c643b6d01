"""Iterated RLHF (Llama 2's recipe): during stage 3 the reward model is trained again, every
``--reward_refresh_interval`` iterations, on comparisons of the policy's latest rollouts ranked by the
labeller (``--labeller``), so it keeps judging the answers the policy now writes.

The rollouts a refresh reads are the ones stage 3 already sampled and scored (several answers per
prompt): the newest prompts first, up to ``--reward_refresh_labels`` labels (one per answer for a
rule or HTTP labeller, one per two answers compared for a judge); their answers become
chosen/rejected pairs by ``--pair_rule`` (ties give none), tokenised exactly as the reward model
scored them. Each refresh runs ``--reward_refresh_steps`` optimizer steps of the pairwise loss (plus
``--reward_refresh_center`` x the mean squared sum of a pair's two scores, Eisenstein et al.'s
centering, as TRL's ``center_rewards_coefficient``: without it the scores drift in scale from one
refresh to the next and the reward clip flattens a prompt's answers) on
batches half of the pairs labelled in stage 3 so far and half of stage 2's comparisons of the SFT
model's answers (``policy_pairs.jsonl`` beside the reward model, when there is one), so what the
reward model learned before is not forgotten.

With several ranks each labels its own rollouts (the budget split evenly) and every rank runs the
same steps (DeepSpeed averages the gradients); a refresh with no pair on some rank is skipped by all.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..data.collate import PairCollator
from ..distributed import all_reduce_sum, is_main, world_size
from ..losses import pairwise_loss
from ..shared_prefix import answer_end_scores
from .labellers import labels_per_prompt
from .ranking import ranked_pairs

log = logging.getLogger("speedchat")

PAIRS_FILE = "refresh_pairs.jsonl"


def rollout_groups(prompts: Sequence[str], answers: Sequence[str], seq: torch.Tensor, attn: torch.Tensor,
                   prompt_width: int, end: torch.Tensor) -> list[dict]:
    """One rollout batch as groups of one prompt's answers (consecutive rows with the same prompt):
    [{prompt (text), answers [K texts], prompt_ids, answer_ids [K]}], the token ids exactly as the
    reward model scored them (the prompt without its left padding, each answer up to its end index).
    seq, attn: [B, L]; end: [B]."""
    groups: list[dict] = []
    seq, attn, end = seq.cpu(), attn.cpu(), end.cpu()
    for i, (p, a) in enumerate(zip(prompts, answers)):
        ans_ids = seq[i, prompt_width:int(end[i]) + 1].tolist()
        if groups and groups[-1]["prompt"] == p:
            groups[-1]["answers"].append(a)
            groups[-1]["answer_ids"].append(ans_ids)
            continue
        prompt_ids = seq[i, :prompt_width][attn[i, :prompt_width].bool()].tolist()
        groups.append({"prompt": p, "answers": [a], "prompt_ids": prompt_ids, "answer_ids": [ans_ids]})
    return groups


def token_pairs(group: dict, labels: Sequence[float], rule: str) -> list[dict]:
    """PairCollator rows (chosen_ids, rejected_ids, prompt_len) of one labelled group."""
    p = group["prompt_ids"]
    return [{"chosen_ids": p + group["answer_ids"][c], "rejected_ids": p + group["answer_ids"][r],
             "prompt_len": len(p)} for c, r in ranked_pairs(labels, rule)]


def label_groups(groups: list[dict], labeller, budget: int, rule: str, first_row: int = 1) -> tuple[list[dict], int]:
    """Label the groups newest first until ``budget`` labels are spent: (records, labels spent), a
    record {prompt, answers, labels, pairs (token rows), text_pairs [(chosen, rejected) indices]}."""
    per = labels_per_prompt(labeller, max((len(g["answers"]) for g in groups), default=0))
    records, used = [], 0
    for n, g in enumerate(reversed(groups)):
        if per == 0 or used + per > budget:
            break
        labels, cost = labeller.scores(g["prompt"], g["answers"], first_row + n)
        used += cost
        records.append({"prompt": g["prompt"], "answers": g["answers"], "labels": labels,
                        "pairs": token_pairs(g, labels, rule), "text_pairs": ranked_pairs(labels, rule)})
    return records, used


@dataclass(frozen=True)
class RefreshPlan:
    """When a refresh runs and what it does: every ``interval`` iterations before ``last_iteration``, ``budget``
    labels (all ranks) ranked into pairs by ``rule``, ``steps`` updates of ``batch`` pairs (half replayed when
    there are stage-2 pairs), ``center`` x the squared mean score added to the loss."""
    interval: int
    budget: int
    steps: int
    batch: int
    rule: str = "all"
    center: float = 0.0
    last_iteration: int = 0
    seed: int = 1234
    pad_id: int = 0
    share: bool = True          # a pair's prompt runs once in the reward model's forward

    @classmethod
    def from_config(cls, cfg, pad_id: int, last_iteration: int) -> "RefreshPlan":
        r = cfg.rewards
        return cls(r.reward_refresh_interval, r.reward_refresh_labels, r.reward_refresh_steps, r.reward_refresh_batch,
                   cfg.rm.pair_rule, r.reward_refresh_center, last_iteration, cfg.optim.seed, pad_id,
                   cfg.model.share_prompt_forward)


class RewardRefresh:
    """Keeps the latest rollouts (``keep``), and when ``due(it)`` labels them and trains the reward
    model engine on them (``__call__(it)`` -> metrics)."""

    def __init__(self, engine, labeller, plan: RefreshPlan, replay: Optional[list[dict]] = None,
                 out: Optional[Path] = None):
        self.engine, self.labeller, self.rule, self.center = engine, labeller, plan.rule, plan.center
        self.interval, self.steps, self.batch, self.share = plan.interval, plan.steps, plan.batch, plan.share
        self.budget = plan.budget // world_size()              # per rank
        self.collate = PairCollator(plan.pad_id)
        self.rng = np.random.RandomState(plan.seed + 86028121)
        self.replay = replay or []
        self.last_iteration, self.out = plan.last_iteration, out
        self.pending: list[dict] = []                     # groups since the last refresh
        self.pairs: list[dict] = []                       # every pair labelled in stage 3 so far
        self.labels = self.refreshes = 0

    @classmethod
    def from_config(cls, cfg, tok, engine, iterations: int, out: Path) -> "RewardRefresh":
        """The refresher of stage 3's reward-model ``engine``: ``--labeller`` and ``--pair_rule`` as in stage 2,
        stage 2's ``policy_pairs.jsonl`` beside the reward model replayed; ``out/refresh_pairs.jsonl`` gets the
        pairs labelled."""
        from ..data.pipeline import tokenize_rows
        from .comparisons import PAIRS_FILE as STAGE2_PAIRS, read_pairs
        from .labellers import DEFAULT_JUDGE_TEMPLATE, build_labeller

        r, m = cfg.rewards, cfg.rm
        replay: list[dict] = []
        stage2 = Path(r.reward_model_name_or_path) / STAGE2_PAIRS
        if stage2.is_file():
            replay, _ = tokenize_rows(read_pairs(stage2), tok, 2, cfg.data)
        if is_main() and not cfg.ckpt.resume:     # a resumed run appends to its own
            (out / PAIRS_FILE).unlink(missing_ok=True)
        labeller = build_labeller(m.labeller, m.judge_template or DEFAULT_JUDGE_TEMPLATE, r.reward_timeout)
        return cls(engine, labeller, RefreshPlan.from_config(cfg, tok.pad_token_id, iterations), replay, out)

    def keep(self, prompts, answers, seq, attn, prompt_width, end) -> None:
        self.pending += rollout_groups(prompts, answers, seq, attn, prompt_width, end)

    def due(self, it: int) -> bool:
        """A refresh after iteration ``it`` (never after the last one: no rollout would use it)."""
        return it % self.interval == 0 and it < self.last_iteration

    def _batch(self, new: int) -> dict:
        rows = [self.pairs[i] for i in self.rng.randint(len(self.pairs), size=new)]
        if self.replay:
            rows += [self.replay[i] for i in self.rng.randint(len(self.replay), size=self.batch - new)]
        return self.collate(rows)

    def __call__(self, it: int) -> dict:
        t0 = time.time()
        groups, self.pending = self.pending, []
        records, used = label_groups(groups, self.labeller, self.budget, self.rule, self.labels + 1)
        new = [p for r in records for p in r["pairs"]]
        self.pairs += new
        self.labels += used
        if self.out is not None and is_main():
            self._write(it, records)
        empty, labels, n_new = all_reduce_sum([float(not self.pairs), float(used), float(len(new))])
        out = {"refresh_labels": labels, "refresh_pairs": n_new}
        if empty:
            log.info("iteration %d: reward-model refresh skipped (no labelled pair yet on %d rank(s))", it, int(empty))
            return {**out, "refresh_s": time.time() - t0}
        dev = self.engine.device
        self.engine.train()
        losses, accs, level = [], [], []
        half = self.batch if not self.replay else max(1, self.batch // 2)
        for _ in range(self.steps):
            b = {k: v.to(dev) for k, v in self._batch(half).items()}
            scores = answer_end_scores(self.engine, b, self.share)
            c, r = scores.chunk(2)
            loss = pairwise_loss(c, r)
            if self.center:          # keeps the scores near 0, so the reward clip never flattens a group
                loss = loss + self.center * ((c.float() + r.float()) ** 2).mean()
            self.engine.backward(loss)
            self.engine.step()
            losses.append(loss.item())
            accs.append((c[:half] > r[:half]).float().mean().item())
            level.append(((c + r) / 2).mean().item())
        self.engine.eval()
        self.refreshes += 1
        out.update(refresh_loss=float(np.mean(losses)), refresh_acc_first=accs[0], refresh_acc_last=accs[-1],
                   refresh_score_level=level[-1], refresh_s=time.time() - t0)
        log.info("iteration %d: reward model refreshed on %d labels -> %d new pairs (%d in stage 3 so far, %d replayed "
                 "from stage 2): %d steps, loss %.3f, accuracy on the stage-3 pairs of the first and last batch "
                 "%.2f -> %.2f, mean score %.2f", it, int(labels), int(n_new), len(self.pairs), len(self.replay),
                 self.steps, out["refresh_loss"], accs[0], accs[-1], level[-1])
        return out

    def _write(self, it: int, records: list[dict]) -> None:
        with open(self.out / PAIRS_FILE, "a") as f:
            for r in records:
                for c, j in r["text_pairs"]:
                    f.write(json.dumps({"iteration": it, "prompt": r["prompt"], "chosen": r["answers"][c],
                                        "rejected": r["answers"][j], "labeller": self.labeller.name,
                                        "chosen_label": r["labels"][c], "rejected_label": r["labels"][j]}) + "\n")

    def summary(self) -> dict:
        labels, pairs = all_reduce_sum([float(self.labels), float(len(self.pairs))])
        return {"labeller": self.labeller.name, "labels": int(labels), "pairs": int(pairs),
                "refreshes": self.refreshes, "interval": self.interval, "steps_per_refresh": self.steps}

    def state_dict(self) -> dict:
        return {"refresh": {"pairs": self.pairs, "labels": self.labels, "refreshes": self.refreshes,
                            "pending": self.pending, "rng": list(self.rng.get_state()[1].tolist()),
                            "rng_pos": int(self.rng.get_state()[2])}}

    def load_state_dict(self, st: dict) -> None:
        s = st["refresh"]
        self.pairs, self.labels, self.refreshes, self.pending = s["pairs"], s["labels"], s["refreshes"], s["pending"]
        self.rng.set_state(("MT19937", np.array(s["rng"], dtype=np.uint32), s["rng_pos"]))


def from_config(cfg, tok, reward_model, iterations: int, refreshes: int, out: Path) -> Optional[RewardRefresh]:
    """Iterated RLHF (``--reward_refresh_interval``): the refreshes of stage 3's reward model, or None."""
    r = cfg.rewards
    if not r.reward_refresh_interval:
        return None
    refresh = RewardRefresh.from_config(cfg, tok, reward_model, iterations, out)
    log.info("iterated RLHF: every %d iterations the reward model trains on %d labels (%s) of the latest rollouts "
             "(%d refreshes x %d steps, %d replayed stage-2 pairs)", r.reward_refresh_interval, r.reward_refresh_labels,
             refresh.labeller.name, refreshes, r.reward_refresh_steps, len(refresh.replay))
    return refresh
