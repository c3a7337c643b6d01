"""Reward sources for Stage 3: a trained reward model, Python rule functions, an HTTP endpoint,
and weighted sums of them.

Every source maps a rollout to one float per answer.  Specs (``--reward``):

- ``model`` / ``model:DIR``: a scalar reward model scored at the answer's EOS;
- ``checker``: the bundled dataset's checker (1.0 pass, 0.0 fail);
- ``rule:module:function`` (or ``module:function``): per answer, ``function(prompt, answer, **columns)
  -> float``; or, when its parameters name ``prompts``, ``completions`` or ``answers``, per batch,
  ``function(prompts=[...], completions=[...], answers=[...], **columns) -> [float, ...]`` with each
  column a list (TRL's reward-function signature, so TRL reward functions drop in). ``columns`` are the
  row's other dataset columns; a function gets those its parameters name (all with ``**kwargs``);
- ``http://...`` / ``https://...``: POST ``{"prompts": [...], "answers": [...], "columns": [{...}, ...]}``,
  expects ``{"rewards": [float, ...]}`` in the same order.
"""
from __future__ import annotations

import importlib
import inspect
import json
import math
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from .source_kinds import SourceError, parse, register

CHECKER = "training.utils.data.checker:reward"


class RewardError(RuntimeError):
    """A reward source failed or answered something unusable; the message names the source."""


@dataclass
class Rollout:
    """What a reward source may look at: token tensors and the decoded texts."""
    sequences: torch.Tensor       # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    position_ids: torch.Tensor    # [B, L]
    end_index: torch.Tensor       # [B] index of the answer's last token (its EOS when it has one)
    prompts: list[str]
    answers: list[str]
    columns: list[dict] = field(default_factory=list)    # each row's other dataset columns ([]: none)


BATCH_PARAMS = ("prompts", "completions", "answers")


def _accepted(fn, kw: dict, skip: int = 0) -> dict:
    """The entries of ``kw`` that ``fn`` takes: all with ``**kwargs``, else those its parameters name
    (after its first ``skip`` positional ones)."""
    params = list(inspect.signature(fn).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        named = {p.name for p in params[:skip]}
        return {k: v for k, v in kw.items() if k not in named}
    names = {p.name for p in params[skip:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in kw.items() if k in names}


def _floats(values, n: int, source: str) -> torch.Tensor:
    if not isinstance(values, (list, tuple)) or len(values) != n:
        raise RewardError(f"reward source {source}: expected {n} rewards, got {values!r:.200}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise RewardError(f"reward source {source}: reward {i} is {v!r}, not a number")
        out.append(float(v))
    return torch.tensor(out, dtype=torch.float32)


class RuleReward:
    def __init__(self, target: str):
        mod, _, fn = target.rpartition(":")
        if not mod or not fn:
            raise RewardError(f"rule reward {target!r}: expected module:function")
        try:
            self.fn = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            raise RewardError(f"rule reward {target!r}: cannot import ({e})") from e
        if not callable(self.fn):
            raise RewardError(f"rule reward {target!r} is not callable")
        self.name = f"rule:{target}"
        try:
            params = inspect.signature(self.fn).parameters
        except (TypeError, ValueError):
            params = {}
        self.batched = any(name in params for name in BATCH_PARAMS)

    def __call__(self, r: Rollout) -> torch.Tensor:
        return self.score_texts(r.prompts, r.answers, r.columns)

    def score_texts(self, prompts: Sequence[str], answers: Sequence[str],
                    columns: Optional[Sequence[dict]] = None) -> torch.Tensor:
        columns = list(columns) if columns else [{} for _ in answers]
        if self.batched:
            kw = {name: [c.get(name) for c in columns] for name in sorted({k for c in columns for k in c})}
            kw.update(prompts=list(prompts), completions=list(answers), answers=list(answers))
            try:
                vals = self.fn(**_accepted(self.fn, kw))
            except Exception as e:
                raise RewardError(f"{self.name} failed on a batch of {len(answers)} answers: "
                                  f"{type(e).__name__}: {e}") from e
            return _floats(list(vals) if isinstance(vals, (list, tuple)) else vals, len(answers), self.name)
        vals = []
        for i, (p, a, c) in enumerate(zip(prompts, answers, columns)):
            try:
                vals.append(self.fn(p, a, **_accepted(self.fn, c, skip=2)))
            except Exception as e:
                raise RewardError(f"{self.name} failed on answer {i} (prompt {p[:80]!r}): "
                                  f"{type(e).__name__}: {e}") from e
        return _floats(vals, len(answers), self.name)


class HTTPReward:
    def __init__(self, url: str, timeout: float = 30.0):
        self.url, self.timeout, self.name = url, timeout, url

    def __call__(self, r: Rollout) -> torch.Tensor:
        return self.score_texts(r.prompts, r.answers, r.columns)

    def score_texts(self, prompts: Sequence[str], answers: Sequence[str],
                    columns: Optional[Sequence[dict]] = None) -> torch.Tensor:
        body = {"prompts": list(prompts), "answers": list(answers)}
        if columns and any(columns):
            body["columns"] = list(columns)
        body = json.dumps(body).encode()
        req = urllib.request.Request(self.url, data=body, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise RewardError(f"reward endpoint {self.url}: HTTP {e.code}: {e.read()[:200]!r}") from e
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise RewardError(f"reward endpoint {self.url}: {e}") from e
        except json.JSONDecodeError as e:
            raise RewardError(f"reward endpoint {self.url}: answer is not JSON ({e})") from e
        if not isinstance(data, dict) or "rewards" not in data:
            raise RewardError(f"reward endpoint {self.url}: expected {{\"rewards\": [...]}}, got {str(data)[:200]}")
        return _floats(data["rewards"], len(answers), self.url)


class ModelReward:
    def __init__(self, model: Callable, name: str):
        self.model, self.name = model, f"model:{name}"

    def __call__(self, r: Rollout) -> torch.Tensor:
        from .model.reward import end_scores

        values = self.model(r.sequences, r.attention_mask, r.position_ids)
        return end_scores(values, r.end_index).float().cpu()


class CombinedReward:
    """sum_i w_i * source_i; ``parts`` keeps the last per-source means for logging."""

    def __init__(self, sources: Sequence, weights: Sequence[float]):
        self.sources, self.weights = list(sources), list(weights)
        self.parts: dict[str, float] = {}

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def __call__(self, r: Rollout) -> torch.Tensor:
        total = torch.zeros(len(r.answers))
        for w, s in zip(self.weights, self.sources):
            v = s(r)
            self.parts[s.name] = v.mean().item()
            total += w * v
        bad = [i for i, v in enumerate(total.tolist()) if not math.isfinite(v)]
        if bad:
            raise RewardError(f"non-finite reward for answers {bad} from {', '.join(self.names)}")
        return total


@register("checker", "reward")
def _checker(target: str, **_) -> RuleReward:
    return RuleReward(CHECKER)


@register("rule", "reward")
def _rule(target: str, **_) -> RuleReward:
    return RuleReward(target)


@register("http", "reward")
def _http(target: str, timeout: float = 30.0, **_) -> HTTPReward:
    return HTTPReward(target, timeout)


@register("model", "reward")
def _model(target: str, load_model: Optional[Callable] = None, default_model: str = "", **_) -> ModelReward:
    path = target or default_model
    if not path:
        raise RewardError("reward 'model' needs --reward_model_name_or_path (or model:DIR)")
    if load_model is None:
        raise RewardError(f"reward model {path!r}: no reward-model loader given")
    return ModelReward(load_model(path), path)


def needs_model(specs: Sequence[str]) -> list[str]:
    """The reward-model paths among ``specs`` ('' for the default ``model``): the specs whose kind needs a loader."""
    kinds = [parse(s, "reward") for s in specs]
    return [target for k, target in kinds if k.reward is _model]


def check(cfg) -> None:
    """Every source spec of a config can play its flag's role (``ConfigError`` naming the flag)."""
    from .config import ConfigError

    r, m = cfg.rewards, cfg.rm
    flags = [("reward", s, "reward") for s in r.reward] + [("eval_reward", s, "metric") for s in r.eval_reward]
    flags += [("labeller", m.labeller, "judge" if r.reward_refresh_interval else "label")]
    flags += [("judge", r.judge, "judge")] if r.judge else []
    for flag, spec, role in flags:
        try:
            parse(spec, role)
        except SourceError as e:
            why = " (as --reward_refresh_interval needs)" if role == "judge" and flag == "labeller" else ""
            raise ConfigError(f"--{flag}: {e}{why}") from e
    if r.reward_refresh_interval and len(needs_model(r.reward)) != 1:
        raise ConfigError(f"reward_refresh_interval trains the reward model during stage 3: --reward must name "
                          f"exactly one reward model, got {' '.join(r.reward)}")


def build_reward(specs: Sequence[str], weights: Sequence[float] = (), load_model: Optional[Callable] = None,
                 default_model: str = "", timeout: float = 30.0) -> CombinedReward:
    """The weighted sum of ``specs``' sources; ``load_model(path)`` builds a frozen reward model for ``model``."""
    sources = []
    for spec in specs:
        try:
            kind, target = parse(spec, "reward")
        except SourceError as e:
            raise RewardError(str(e)) from e
        sources.append(kind.reward(target, load_model=load_model, default_model=default_model, timeout=timeout))
    w = list(weights) or [1.0] * len(sources)
    if len(w) != len(sources):
        raise RewardError(f"{len(w)} weights for {len(sources)} reward sources")
    return CombinedReward(sources, w)


def eval_metric(r, log) -> Optional[CombinedReward]:
    """Stage 3's evaluation metric from the rewards section ``r``: ``--eval_reward``, else the rule and HTTP
    sources of ``--reward`` (each at weight 1), else None (the bundled checker on its tasks)."""
    specs = r.eval_reward or [s for s in r.reward if "metric" in parse(s, "reward")[0].roles]
    if not specs:
        log.info("evaluation: the bundled checker's pass-rate on the prompts that are its tasks")
        return None
    log.info("evaluation: pass-rate = share of greedy answers that %s scores >= %g", " + ".join(specs),
             r.eval_pass_threshold)
    return build_reward(specs, timeout=r.reward_timeout)
