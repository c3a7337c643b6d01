"""Multi-turn rollouts: the model's turns alternate with an environment's observations (tool results).

One conversation is one row. Each row starts from its prompt's messages (``environment.reset``),
rendered with the environment's tools by the chat template; then, turn by turn, every row still
talking is generated in one left-padded batch (rows at different turns batch together), each turn's
text goes to ``environment.step``, and its observations are appended as the template renders them
(``tools.render.continuation_ids``). A turn ends at EOS or at a ``turn_stop`` text (then the EOS the
template ends a turn with is added, outside the action mask). A row stops when the environment says
done (a turn without a tool call), at ``max_turns`` model turns, when a turn is cut off by the per-turn
cap, or when the next observation would take the tokens after the prompt to ``max_rollout_tokens``.

The sequence is [left-padded prompt | turn 1 | observation 1 | turn 2 | ... | padding]. The action mask
is 1 only on the tokens the model sampled, so template tokens and tool outputs are excluded from the
loss, the KL, the advantages and the critic's values. All turns run in one Hybrid Engine session:
ZeRO-3 gathers the weights (and LoRA merges) once per rollout, not once per turn.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import torch

from ..data.collate import pad_sequences
from ..generation import GenerationSettings
from ..tools.environment import Step, as_step
from ..tools.executor import STATUSES
from ..tools.render import continuation_ids, prompt_ids
from .rollout import Generated


class MultiTurn:
    def __init__(self, engine, tokenizer, env_factory: Callable[[], object], *, max_turns: int,
                 max_rollout_tokens: int = 0, turn_stop: tuple = (), where: str = "--environment"):
        self.engine, self.tok, self.factory = engine, tokenizer, env_factory
        self.max_turns, self.where, self.stops = max_turns, where, tuple(turn_stop)
        self.budget = max_rollout_tokens if max_rollout_tokens > 0 else math.inf

    def _turn(self, toks: list[int], cap: int) -> tuple[list[int], bool]:
        """A turn's tokens: up to its first EOS, else up to the end of its first stop text (True: ended by
        it), else the first ``cap`` (cut off)."""
        eos = self.tok.eos_token_id
        ended = eos in toks[:cap]
        end = toks.index(eos) + 1 if ended else cap
        if self.stops:
            for j in range(1, end if ended else end + 1):       # the prefixes before the EOS
                text = self.tok.decode(toks[:j], skip_special_tokens=True)
                if any(s in text for s in self.stops):
                    return toks[:j], True
        return toks[:end], False

    def _steps(self, envs: list, convs: list[list[dict]], rows: list[int]) -> dict[int, Step]:
        """Each row's environment step; the tool loop's calls of all rows run in one batch (a worker pool
        runs them side by side)."""
        tool_rows = [i for i in rows if hasattr(envs[i], "parse") and hasattr(envs[i], "observe")]
        parsed = {i: envs[i].parse(convs[i]) for i in tool_rows}
        if tool_rows:
            results = envs[tool_rows[0]].executor.run_many([parsed[i].calls for i in tool_rows])
        out = {i: envs[i].observe(parsed[i], r) for i, r in zip(tool_rows, results)} if tool_rows else {}
        for i in rows:
            if i not in out:
                out[i] = as_step(envs[i].step(convs[i]), self.where)
        return out

    def __call__(self, batch: dict, settings: GenerationSettings) -> tuple[dict, Generated]:
        tok, eos, dev = self.tok, self.tok.eos_token_id, batch["input_ids"].device
        n = batch["input_ids"].shape[0]
        columns = batch.get("columns") or [{} for _ in range(n)]
        envs = [self.factory() for _ in range(n)]
        convs = [envs[i].reset({"messages": batch["messages"][i], **columns[i]}) for i in range(n)]
        schemas = [list(getattr(e, "tools", None) or []) for e in envs]
        prompts = [prompt_ids(tok, convs[i], schemas[i]) for i in range(n)]
        tail: list[list[int]] = [[] for _ in range(n)]        # the tokens after the prompt
        sampled: list[list[int]] = [[] for _ in range(n)]     # 1 where the model sampled the token
        logps: list[list[float]] = [[] for _ in range(n)]
        turns, has_eos, env_reward = [0] * n, [False] * n, [0.0] * n
        calls: list[list[dict]] = [[] for _ in range(n)]
        answers = [""] * n
        active = list(range(n))
        with self.engine.session():
            for turn in range(self.max_turns):
                if not active:
                    break
                ids, mask = pad_sequences([prompts[i] + tail[i] for i in active], tok.pad_token_id, left=True)
                room = [self.budget - len(tail[i]) for i in active]
                s = replace(settings, max_new_tokens=int(min(settings.max_new_tokens, max(room))),
                            share_prompt=settings.share_prompt and turn == 0, stop_strings=self.stops)
                out = self.engine.generate(ids.to(dev), mask.to(dev), s)
                seq, lp = out if s.return_logprobs else (out, None)
                new = seq[:, ids.shape[1]:].tolist()
                done_turn = []
                for k, i in enumerate(active):
                    toks, by_stop = self._turn(new[k], int(min(len(new[k]), room[k])))
                    tail[i] += toks
                    sampled[i] += [1] * len(toks)
                    logps[i] += lp[k, :len(toks)].tolist() if lp is not None else [0.0] * len(toks)
                    turns[i] += 1
                    if by_stop:          # the template's end of turn after the stop text, not sampled
                        tail[i].append(eos)
                        sampled[i].append(0)
                        logps[i].append(0.0)
                    has_eos[i] = tail[i][-1] == eos
                    answers[i] = tok.decode(toks, skip_special_tokens=True).strip()
                    convs[i].append({"role": "assistant", "content": answers[i]})
                    if has_eos[i]:
                        done_turn.append(i)
                steps = self._steps(envs, convs, done_turn)
                nxt = []
                for i in done_turn:
                    st = steps[i]
                    calls[i] += st.calls
                    env_reward[i] += st.reward or 0.0
                    if st.done or not st.observations or turn + 1 == self.max_turns:
                        continue
                    cont = continuation_ids(tok, convs[i], st.observations, schemas[i])
                    if len(tail[i]) + len(cont) >= self.budget:
                        continue
                    convs[i] += st.observations
                    tail[i] += cont
                    sampled[i] += [0] * len(cont)
                    logps[i] += [0.0] * len(cont)
                    nxt.append(i)
                active = nxt
        return self._assemble(batch, prompts, tail, sampled, logps if settings.return_logprobs else None,
                              has_eos, convs, calls, answers, turns, env_reward, columns, dev)

    def _assemble(self, batch, prompts, tail, sampled, logps, has_eos, convs, calls, answers, turns, env_reward,
                  columns, dev) -> tuple[dict, Generated]:
        n, pad = len(prompts), self.tok.pad_token_id
        width_p, width_t = max(map(len, prompts)), max(map(len, tail))
        seq = torch.full((n, width_p + width_t), pad, dtype=torch.long)
        attn = torch.zeros_like(seq)
        action = torch.zeros(n, width_p + width_t - 1)
        logp = torch.zeros_like(action) if logps is not None else None
        for i in range(n):
            p, t = len(prompts[i]), len(tail[i])
            seq[i, width_p - p:width_p + t] = torch.tensor(prompts[i] + tail[i])
            attn[i, width_p - p:width_p + t] = 1
            action[i, width_p - 1:width_p - 1 + t] = torch.tensor(sampled[i], dtype=torch.float)
            if logp is not None:
                logp[i, width_p - 1:width_p - 1 + t] = torch.tensor(logps[i])
        end = torch.tensor([width_p + len(t) - 1 for t in tail])
        out = dict(batch)
        out.update(
            input_ids=seq[:, :width_p].to(dev),
            attention_mask=attn[:, :width_p].to(dev),
            answers=answers,
            columns=[{**c, "conversation": conv, "tool_calls": cl} for c, conv, cl in zip(columns, convs, calls)],
            env_reward=torch.tensor(env_reward, device=dev),
        )
        metrics = {**self._metrics(calls, turns, sampled, env_reward), **getattr(self.engine, "metrics", {})}
        g = Generated(seq.to(dev), attn.to(dev), action.to(dev), end.to(dev), torch.tensor(has_eos, device=dev),
                      None if logp is None else logp.to(dev), metrics)
        return out, g

    @staticmethod
    def _metrics(calls, turns, sampled, env_reward) -> dict:
        n = len(turns)
        flat = [c for cl in calls for c in cl]
        m = {"turns_per_rollout": sum(turns) / n, "calls_per_rollout": len(flat) / n,
             "rollouts_with_call": sum(1 for cl in calls if cl) / n,
             "observation_tokens": sum(len(s) - sum(s) for s in sampled) / n,
             "env_reward": sum(env_reward) / n}
        if flat:
            m["call_parse_rate"] = sum(c["status"] != "malformed" for c in flat) / len(flat)
            m["call_success_rate"] = sum(c["status"] == "ok" for c in flat) / len(flat)
            for status in STATUSES[1:]:
                m[f"calls_{status}"] = float(sum(c["status"] == status for c in flat))
        return m


def truncator(tokenizer, max_tokens: int) -> Callable[[str], str]:
    """Cuts a tool's output to ``max_tokens`` tokens, saying so."""
    def cut(text: str) -> str:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text
        return tokenizer.decode(ids[:max_tokens]) + f" ... [cut to {max_tokens} tokens]"
    return cut


def rollout_from_config(tools_cfg, engine, tokenizer):
    """The rollout the ``tools`` section asks for: one answer per prompt (no tools, no environment), the tool
    loop, or the user's environment."""
    from ..tools.environment import ToolEnvironment, load_environment
    from ..tools.executor import ToolExecutor
    from ..tools.parsers import get_parser
    from ..tools.spec import load_tools
    from .rollout import SingleTurn

    t = tools_cfg
    if not t.tools and not t.environment:
        return SingleTurn(engine, tokenizer.eos_token_id)
    if t.environment:
        factory = load_environment(t.environment)
    else:
        executor = ToolExecutor(load_tools(t.tools), t.tool_timeout, truncator(tokenizer, t.max_tool_output_tokens),
                                t.tool_workers)
        parser = get_parser(t.tool_parser)
        env = ToolEnvironment(executor, parser)      # stateless: one instance serves every rollout
        factory = lambda: env                         # noqa: E731
    return MultiTurn(engine, tokenizer, factory, max_turns=t.max_turns, max_rollout_tokens=t.max_rollout_tokens,
                     turn_stop=tuple(t.turn_stop))
