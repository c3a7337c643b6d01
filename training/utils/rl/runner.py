"""The stage-3 loop, one for every algorithm: rollouts, updates, evaluation, checkpoints and resume.

Each iteration collects ``generation_batches`` rollout batches through the experience maker, skips
the update when a reward is not finite (``--max_nonfinite`` in a row stop the run), trains on the
experiences, and logs one metrics row; ``--eval_interval`` evaluates greedy answers on the held-out
prompts, ``--save_interval`` writes a checkpoint that ``--resume`` continues from exactly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch

from .. import checkpoint, faults
from ..data.checker import check, parse_task, pass_rate
from ..distributed import all_reduce_sum, is_main, rank
from ..generation import GenerationSettings, decode_answers
from ..labels.ranking import auc, within_prompt_auc
from ..loop import drive, to_device
from ..reward_sources import Rollout
from ..shared_prefix import position_ids_from

log = logging.getLogger("speedchat")


def batch_reward(reward, tok, judge=None, keep=None):
    """The (seq, attn, pos, end, batch) -> [B] form the experience maker and evaluation call.

    The rollouts scored since the last ``take_checked()`` are also judged, as a diagnostic the training
    log shows beside the reward (the judge never rewards: it is the gold the reward is the proxy of):
    by ``judge`` (a labeller, ``training/utils/labels``) when one is configured, else by the bundled
    checker on the prompts that are its tasks. ``take_checked()`` gives the judge's mean verdict
    (``rollout_pass_rate`` for the checker, ``judge_score`` for another judge) and ``reward_judge_auc``:
    how often the reward ranks two rollouts as the judge does, within a prompt's answers when the batch
    has several per prompt (``reward_judge_pairs`` such pairs), else over the batch. Answers scored
    with ``rollout=False`` (evaluation, ReMax's greedy baselines) are not judged. ``keep(prompts, answers,
    seq, attn, prompt_width, end)``, when given, also receives every rollout batch scored (the reward-model
    refresh labels them later)."""
    def verdicts(prompts: list[str], answers: list[str]) -> list:
        if judge is None:
            return [float(check(p, a)) if parse_task(p) is not None else None for p, a in zip(prompts, answers)]
        out, i = [], 0
        while i < len(prompts):          # a prompt's answers are consecutive rows
            j = i
            while j < len(prompts) and prompts[j] == prompts[i]:
                j += 1
            out += judge.scores(prompts[i], answers[i:j], len(score.seen) + 1)[0]
            i = j
        return out

    def score(seq, attn, pos, end, batch, rollout: bool = True):
        # a multi-turn rollout gives its last turn's text (the sequence also holds the tool outputs)
        answers = batch.get("answers") or decode_answers(tok, seq, batch["input_ids"].shape[1], end)
        prompts = batch.get("prompt_text") or [""] * seq.shape[0]
        r = reward(Rollout(seq, attn, pos, end, prompts, answers, batch.get("columns") or [])).to(seq.device)
        if rollout:
            score.last = (prompts[0], answers[0], float(r[0]), (batch.get("columns") or [{}])[0])
            score.seen.append((prompts, r.detach().float().cpu().tolist(), verdicts(prompts, answers)))
            if keep is not None:
                keep(prompts, answers, seq, attn, batch["input_ids"].shape[1], end)
        return r

    def take_checked() -> dict:
        seen, score.seen = score.seen, []
        judged = [(p, r, v) for ps, rs, vs in seen for p, r, v in zip(ps, rs, vs) if v is not None]
        if not judged:
            return {}
        mean = sum(v for _, _, v in judged) / len(judged)
        out = {"rollout_pass_rate" if judge is None else "judge_score": mean}
        groups: dict[str, tuple[list, list]] = {}
        for p, r, v in judged:
            g = groups.setdefault(p, ([], []))
            g[0].append(r)
            g[1].append(v)
        if any(len(g[0]) > 1 for g in groups.values()):
            agreement, pairs = within_prompt_auc(list(groups.values()))
        else:
            agreement = auc([r for _, r, _ in judged], [v for _, _, v in judged])
            pairs = sum(1 for a in judged for b in judged if a[2] > b[2])
        if agreement is not None:
            out.update(reward_judge_auc=agreement, reward_judge_pairs=float(pairs))
        return out
    score.seen, score.take_checked, score.last, score.reward = [], take_checked, None, reward
    return score


@torch.no_grad()
def evaluate(rollout, reward_fn, loader, tok, max_new_tokens: int, metric=None, threshold: float = 1.0,
             device=None) -> dict:
    """Greedy answers on the held-out prompts: the mean training reward and length, and the pass-rate:
    the share of answers that ``metric`` (a reward source: the user's own rules, ``--eval_reward``)
    scores at ``threshold`` or more, with its mean as ``eval_reward``; without a metric, the bundled
    checker's verdict on the prompts that are its tasks."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False)
    total = length = n = scored = passed = metric_sum = 0.0
    for batch in loader:
        batch, g = rollout(to_device(batch, device), settings)
        seq, attn, end = g.sequences, g.attention_mask, g.end_index
        pos = position_ids_from(attn)
        r = reward_fn(seq, attn, pos, end, batch, rollout=False)
        if "env_reward" in batch:
            r = r + batch["env_reward"].to(r)
        total += r.sum().item()
        length += g.action_mask.sum().item()
        n += r.numel()
        prompts = batch["prompt_text"]
        answers = batch.get("answers") or decode_answers(tok, seq, batch["input_ids"].shape[1], end)
        if metric is not None:
            m = metric(Rollout(seq, attn, pos, end, prompts, answers, batch.get("columns") or []))
            metric_sum += m.sum().item()
            passed += (m >= threshold).sum().item()
            scored += m.numel()
        else:
            known = [(p, a) for p, a in zip(prompts, answers) if parse_task(p) is not None]
            if known:
                passed += pass_rate([p for p, _ in known], [a for _, a in known])["pass_rate"] * len(known)
                scored += len(known)
    total, length, n, passed, scored, metric_sum = all_reduce_sum([total, length, n, passed, scored, metric_sum])
    out = {"reward": total / max(n, 1), "response_length": length / max(n, 1)}
    if scored:
        out["pass_rate"] = passed / scored
    if metric is not None and scored:
        out["eval_reward"] = metric_sum / scored
    return out


@dataclass
class Evaluation:
    """Stage 3's evaluation: greedy answers to ``loader``'s held-out prompts, judged by ``metric`` (a reward
    source, ``--eval_reward``; None: the bundled checker) at ``threshold``."""
    loader: object
    metric: Optional[object]
    threshold: float
    max_new_tokens: int


class RLLoop:
    """``run()`` trains ``iterations`` iterations and returns (first eval, final eval). The optional features
    are ``hooks`` (``hooks.py``), the first of them the prompt source (``next_batch()``)."""

    def __init__(self, cfg, writer, *, maker, trainer, hooks: list, evaluation: Optional[Evaluation],
                 iterations: int):
        self.cfg, self.c, self.w = cfg, cfg.rl, writer
        self.maker, self.trainer, self.reward_fn, self.guard = maker, trainer, maker.reward_fn, trainer.guard
        self.prompts, self.hooks = hooks[0], hooks
        self.evaluation, self.iterations = evaluation, iterations
        self.device = trainer.resident.home
        self.rows = self.c.rollout.per_device_generation_batch_size * self.c.rollout.num_samples_per_prompt

    def describe(self) -> str:
        """The run in a few lines: its parts, each describing itself."""
        parts = [f"{self.c.algo.upper()}: {self.iterations} iterations", self.maker.describe(), self.trainer.describe()]
        curriculum = getattr(self.prompts, "curriculum", None)
        if curriculum is not None:
            parts.append(f"prompt curriculum over {len(curriculum.names)} groups ({', '.join(curriculum.names)})")
        return "\n  ".join(parts)

    def engines(self) -> dict:
        """The engines a checkpoint holds: the trainer's (actor, critic) and the hooks' (a refreshed reward model)."""
        out = self.trainer.engines()
        for h in self.hooks:
            out.update(h.engines())
        return out

    def evaluate(self) -> dict:
        ev = self.evaluation
        if ev is None or not ev.loader:
            return {}
        self.trainer.resident.use("reward")          # greedy answers, scored
        return evaluate(self.maker.rollout, self.reward_fn, ev.loader, self.maker.tok, ev.max_new_tokens, ev.metric,
                        ev.threshold, self.trainer.he.engine.device)

    def iteration(self, it: int) -> dict:
        c = self.c
        exps, roll = [], []
        # dynamic sampling (DAPO): prompt batches are drawn until the rollout batches' answers that carry a
        # signal fill them, or dynamic_sampling_max_batches times as many batches were drawn
        refill = self.maker.est.dynamic_sampling
        target, draws = c.rollout.generation_batches * self.rows, c.rollout.generation_batches * (
            c.rollout.dynamic_sampling_max_batches if refill else 1)
        parts = self.reward_fn.reward.parts
        for _ in range(draws):
            batch = self.prompts.next_batch()
            exp, m = self.maker.make(to_device(batch, self.device))
            for h in self.hooks:
                h.after_rollout(batch, self.maker)
            if len(parts) > 1:       # per-source means of this rollout's rewards
                m.update({f"reward/{k}": v for k, v in parts.items()})
            roll.append(m)
            if exp is not None:
                exps.append(exp)
            if len(roll) >= c.rollout.generation_batches and (not refill or sum(len(e.score) for e in exps) >= target):
                break
        if not self.guard.check(torch.tensor([m["reward"] for m in roll]), "reward", it):
            return {"skipped_updates": 1.0}
        metrics = {k: sum(m.get(k, 0.0) for m in roll) / len(roll) for k in roll[0]}
        if refill:
            metrics.update(prompt_batches_drawn=float(len(roll)), kept_answers=float(sum(len(e.score) for e in exps)))
        for h in self.hooks:
            metrics.update(h.after_scoring())
        if exps:
            metrics.update(self.trainer.train(exps, it - 1, c.loss.per_device_training_batch_size, self.device))
        else:
            metrics["train_s"] = 0.0
            log.info("iteration %d: no answer carried a learning signal (every group scored alike); no update", it)
        metrics["skipped_updates"] = float(not exps)
        for h in self.hooks:
            metrics.update(h.after_update(it, metrics))
        step_s = (metrics["generation_s"] + metrics["experience_s"]) * len(roll) + metrics["train_s"]
        e2e = sum(int(e.attention_mask.sum()) for e in exps)
        metrics["e2e_tokens_per_s"] = e2e / step_s if step_s > 0 else 0.0
        metrics["generated_tokens"] = sum(int(e.action_mask.sum()) for e in exps)
        return metrics

    def resume(self) -> tuple[int, Optional[dict]]:
        """(iterations done, the step-0 eval) of the newest intact checkpoint, its state restored."""
        d = checkpoint.find_resume(self.cfg)
        if d is None:
            return 0, None
        st = checkpoint.load(d, self.engines())
        self.w.rewind(st["step"])
        self.trainer.load_state_dict(d)
        self.maker.load_state_dict(st)
        for h in self.hooks:
            try:
                h.load_state_dict(st)
            except RuntimeError as e:
                raise RuntimeError(f"checkpoint {d}: {e}") from e
        self.guard.total = st["nonfinite"]
        return st["step"], st["first_eval"]

    def save(self, it: int, first: Optional[dict]) -> None:
        state = {"first_eval": first, "nonfinite": self.guard.total, **self.maker.state_dict()}
        rank_state: dict = {}
        for h in self.hooks:
            state.update(h.state_dict())
            rank_state.update(h.rank_state_dict())
        ema = self.trainer.ema
        checkpoint.save(self.cfg.log.output_dir, it, self.engines(), state, self.cfg.ckpt.keep_checkpoints,
                        {"ema.safetensors": ema.shadow} if ema is not None and is_main() else None,
                        rank_state or None)

    def step(self, it: int) -> dict:
        """Iteration ``it``, with the judge's verdicts and the first rollout's sample."""
        for h in self.hooks:
            h.before_iteration(it)
        metrics = self.iteration(it)
        for h in self.hooks:
            h.after_iteration(it)
        if self.reward_fn.last is not None:      # the iteration's first rollout, with its row's columns
            prompt, answer, score, columns = self.reward_fn.last
            self.w.sample(it, {"prompt": prompt, "answer": answer, "reward": score, "columns": columns})
            if self.c.rollout.print_answers and it % self.c.rollout.print_answers_interval == 0:
                log.info("iteration %d, rank %d: prompt %r -> answer %r (reward %.4g)", it, rank(), prompt, answer,
                         score)
        metrics.update(self.reward_fn.take_checked())
        metrics["nonfinite_skipped"] = self.guard.total
        return metrics

    def run(self) -> tuple[Optional[dict], dict]:
        """(the step-0 evaluation, the final one) of ``iterations`` iterations, resumed when asked."""
        start, first = self.resume()
        return drive(self.cfg, self.w, total=self.iterations, start=start, step=self.step, evaluate=self.evaluate,
                     save=self.save, desc=self.c.algo, postfix=("reward", "kl", "rollout_pass_rate"), first=first,
                     fault=faults.parse(self.cfg.ckpt.fault))


def rollout_judge(cfg):
    """The labeller whose verdicts on the rollouts are logged beside the reward (``--judge``), or None (the
    bundled checker on the prompts that are its tasks)."""
    r = cfg.rewards
    if not r.judge:
        return None
    from ..labels.labellers import DEFAULT_JUDGE_TEMPLATE, build_labeller

    judge = build_labeller(r.judge, cfg.rm.judge_template or DEFAULT_JUDGE_TEMPLATE, r.reward_timeout)
    log.info("judge of the rollouts (logged, never a reward): %s", judge.name)
    return judge
