"""Phase split, tokenisation per phase, and the tokenised-data cache.

``--data_split 2,4,4`` cuts every source's rows (train and eval separately) into three disjoint
slices with a seeded permutation: slice 1 feeds SFT, slice 2 the reward model, slice 3 PPO.  A
source without an eval split first holds out ``eval_fraction`` of its rows.  Tokenised rows are
cached under a key that covers every input (sources' content, split, seed, lengths, tokenizer,
template, phase), so a change anywhere rebuilds and nothing stale is read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..config import DataConfig, parse_split
from .format import answer_token_ids, prompt_token_ids, render_answer, render_prompt, to_messages
from .sources import DataError, Keys, Source, get_source

log = logging.getLogger(__name__)
CACHE_VERSION = 4
PHASE_NAMES = {1: "sft", 2: "pairs", 3: "prompts"}


def phase_indices(n: int, fractions: list[float], phase: int, seed: int) -> np.ndarray:
    """Indices of rows 0..n-1 that belong to ``phase`` (1-3); the three sets partition range(n)."""
    perm = np.random.RandomState(seed).permutation(n)
    bounds = np.round(np.cumsum([0.0] + fractions) * n).astype(int)
    bounds[-1] = n
    return np.sort(perm[bounds[phase - 1]:bounds[phase]])


def holdout(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """Seeded split of rows into (train, eval) for sources that ship no eval split."""
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    perm = np.random.RandomState(seed + 7919).permutation(len(rows))
    k = max(1, int(round(len(rows) * fraction)))
    ev = set(perm[:k].tolist())
    return [r for i, r in enumerate(rows) if i not in ev], [r for i, r in enumerate(rows) if i in ev]


@dataclass
class Stats:
    rows: int = 0
    kept: int = 0
    prompt_truncated: int = 0
    answer_truncated: int = 0
    dropped: int = 0
    per_source: dict = field(default_factory=dict)

    def describe(self, split: str) -> str:
        return (f"{split}: {self.kept} of {self.rows} rows kept; prompts truncated {self.prompt_truncated}, "
                f"answers truncated {self.answer_truncated}, dropped {self.dropped}")


def tokenizer_fingerprint(tokenizer) -> str:
    probe = "Hello world! 123 \u00e9\u4e2d <|im_end|> Human: Assistant:"
    return json.dumps({
        "name": getattr(tokenizer, "name_or_path", ""), "len": len(tokenizer),
        "template": hashlib.sha256(str(getattr(tokenizer, "chat_template", "")).encode()).hexdigest(),
        "ids": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
        "probe": tokenizer(probe, add_special_tokens=True)["input_ids"],
    })


def _fit(p: list[int], a: list[int] | None, d: DataConfig, st: Stats):
    """Apply the length limits; None when the row is dropped."""
    if len(p) > d.max_prompt_seq_len:
        if d.truncation == "drop":
            st.dropped += 1
            return None
        p = p[-d.max_prompt_seq_len:]
        st.prompt_truncated += 1
    if a is not None and len(p) + len(a) > d.max_seq_len:
        if d.truncation == "drop":
            st.dropped += 1
            return None
        a = a[:d.max_seq_len - len(p)]
        st.answer_truncated += 1
    return p, a


def tokenize_rows(rows: list[dict], tokenizer, phase: int, d: DataConfig,
                  tools: tuple = ()) -> tuple[list[dict], Stats]:
    """Token ids of ``phase``'s rows; with ``tools`` (JSON schemas) the prompts show them, as the
    multi-turn rollouts of stage 3 do."""
    st = Stats(rows=len(rows))
    mode = d.template
    prompts = [render_prompt(tokenizer, r["prompt"], mode, list(tools)) for r in rows]
    p_ids = [prompt_token_ids(tokenizer, t, mode) for t in prompts]
    out: list[dict] = []
    if phase == 3:
        grouped = any("_group" in r for r in rows)      # --balance_key: the row's group travels along
        for r, text, p in zip(rows, prompts, p_ids):
            fit = _fit(p, None, d, st)
            if fit:     # the row's other columns, for the reward functions (JSON: any shape per row)
                out.append({"prompt_ids": fit[0], "prompt_text": text, "columns": json.dumps(r.get("_columns", {})),
                            "messages": json.dumps(to_messages(r["prompt"])),     # multi-turn rollouts re-render
                            **({"group": r.get("_group", "")} if grouped else {})})
    elif phase == 1:
        for r, p in zip(rows, p_ids):
            if r["chosen"] is None:
                raise DataError(f"{r['_src']}: row {r['_row']}: field 'chosen': missing (supervised fine-tuning "
                                "needs an answer; prompt-only rows are for stage 3)")
            fit = _fit(p, answer_token_ids(tokenizer, render_answer(r["chosen"], tokenizer, mode)), d, st)
            if fit:
                out.append({"input_ids": fit[0] + fit[1], "prompt_len": len(fit[0])})
    else:
        for r, p in zip(rows, p_ids):
            for key in ("chosen", "rejected"):
                if r[key] is None:
                    raise DataError(f"{r['_src']}: row {r['_row']}: field '{key}': missing "
                                    "(the reward-model stage needs chosen/rejected pairs)")
            c = answer_token_ids(tokenizer, render_answer(r["chosen"], tokenizer, mode))
            j = answer_token_ids(tokenizer, render_answer(r["rejected"], tokenizer, mode))
            st_c = Stats()
            fc, fj = _fit(p, c, d, st_c), _fit(p, j, d, st_c)
            if fc is None or fj is None:
                st.dropped += 1
                continue
            st.prompt_truncated += int(st_c.prompt_truncated > 0)
            st.answer_truncated += int(st_c.answer_truncated > 0)
            out.append({"chosen_ids": fc[0] + fc[1], "rejected_ids": fj[0] + fj[1], "prompt_len": len(fc[0])})
    st.kept = len(out)
    return out, st


def _cap(rows: list, cap: int, seed: int) -> list:
    if cap and len(rows) > cap:
        keep = np.sort(np.random.RandomState(seed).permutation(len(rows))[:cap])
        return [rows[i] for i in keep]
    return rows


ONLY = {1: "sft_only_data_path", 3: "rl_only_data_path"}      # the sources a phase uses whole, and it alone


def phase_sources(d: DataConfig, phase: int) -> tuple[list[Source], list[Source]]:
    """(split sources, the sources only this phase uses: ``ONLY``) of ``phase``; built once, as building one hashes
    its files."""
    keys = Keys(d.prompt_key, d.chosen_key, d.rejected_key, d.messages_key, d.balance_key)
    main = [get_source(s, keys, d.bundled_size) for s in d.data_path]
    only = [get_source(s, keys, d.bundled_size) for s in getattr(d, ONLY[phase])] if phase in ONLY else []
    return main, only


def mix_in(rows: list[dict], extra: list[dict], share: float, seed: int) -> list[dict]:
    """``rows`` with ``extra`` repeated or sampled (seeded) to ``share`` of the result (0: ``extra`` once as it is;
    1: ``extra`` alone)."""
    if share <= 0 or not extra:
        return rows + extra
    if share >= 1 or not rows:
        return list(extra)
    idx = share_indices(len(rows), len(extra), share, seed + 15485863)
    log.info("%d training rows + %d rows used by this stage alone, repeated to %d (%.0f%% of the rows)", len(rows),
             len(extra), len(idx), 100 * share)
    return rows + [extra[i] for i in idx]


def share_indices(n_rows: int, n_extra: int, share: float, seed: int) -> list[int]:
    """Indices of ``n_extra`` rows that make them ``share`` (0 < share < 1) of ``n_rows`` plus them: each row
    repeated whole as often as it fits, the remainder drawn without replacement (seeded), in order."""
    want = int(round(share * n_rows / (1.0 - share)))
    reps, rest = divmod(want, n_extra)
    return list(range(n_extra)) * reps + sorted(np.random.RandomState(seed).permutation(n_extra)[:rest].tolist())


def _row_key(r: dict) -> str:
    return json.dumps([r["prompt"], r["chosen"], r.get("rejected"), r.get("_columns")], sort_keys=True)


def dedupe(rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Exact duplicates kept once per split (first wins); eval rows that are also training rows go."""
    out, seen_train = {}, set()
    for split in ("train", "eval"):
        seen, kept = set(), []
        for r in rows[split]:
            k = _row_key(r)
            if k in seen or (split == "eval" and k in seen_train):
                continue
            seen.add(k)
            kept.append(r)
        if split == "train":
            seen_train = seen
        if len(kept) < len(rows[split]):
            log.info("%s: %d duplicate row(s) dropped (--dedup false keeps them)", split, len(rows[split]) - len(kept))
        out[split] = kept
    return out


def balance(rows: list[dict], seed: int) -> list[dict]:
    """Every group (``_group``; rows without one form their own) as frequent as the largest one:
    each group's rows repeated whole, the remainder drawn without replacement (seeded)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r.get("_group", ""), []).append(r)
    if len(groups) < 2:
        return rows
    target = max(len(g) for g in groups.values())
    rng = np.random.RandomState(seed + 104729)
    out = []
    for name in sorted(groups):
        g = groups[name]
        reps, rest = divmod(target, len(g))
        out += g * reps + [g[int(i)] for i in np.sort(rng.permutation(len(g))[:rest])]
    log.info("balanced %d training rows over %d groups of %d rows (%s)", len(rows), len(groups), target,
             ", ".join(f"{k or '(none)'} {len(v)}" for k, v in sorted(groups.items())))
    return out


def collect_rows(d: DataConfig, phase: int, seed: int, sources=None) -> dict[str, list[dict]]:
    """Raw canonical rows of ``phase`` for train and eval (each keeps its ``_src`` and ``_row``)."""
    main, only = sources or phase_sources(d, phase)
    fractions = parse_split(d.data_split)
    out: dict[str, list[dict]] = {"train": [], "eval": []}
    for src in main:
        loaded = src.load()
        train, ev = loaded["train"], loaded["eval"]
        if ev is None:
            train, ev = holdout(train, d.eval_fraction, seed)
        for split, rows in (("train", train), ("eval", ev)):
            part = [rows[int(i)] for i in phase_indices(len(rows), fractions, phase, seed)]
            out[split] += src.sft_turns(part) if phase == 1 and src.sft_turns else part
    rl_only = []
    for src in only:
        loaded = src.load()
        if phase == 3:          # mixed in after the split data are balanced, at --rl_only_mix
            rl_only += loaded["train"]
            continue
        out["train"] += loaded["train"]
        out["eval"] += loaded["eval"] or []
    if d.dedup:
        out = dedupe(out)
    if d.balance_key:
        out["train"] = balance(out["train"], seed)
    if rl_only:
        out["train"] = mix_in(out["train"], rl_only, d.rl_only_mix, seed)
    out["train"] = _cap(out["train"], d.max_train_samples, seed)
    out["eval"] = _cap(out["eval"], d.max_eval_samples, seed)
    return out


def cache_key(d: DataConfig, tokenizer, phase: int, seed: int, sources=None, tools: tuple = ()) -> str:
    main, only = sources or phase_sources(d, phase)
    blob = json.dumps(
        {
            **({"rl_only": [s.fingerprint for s in only], "rl_only_mix": d.rl_only_mix} if phase == 3 and only else
               {"sft_only": [s.fingerprint for s in only]}),
            "tools": list(tools),
            "v": CACHE_VERSION,
            "phase": phase,
            "seed": seed,
            "sources": [s.fingerprint for s in main],
            "split": parse_split(d.data_split),
            "eval_fraction": d.eval_fraction,
            "lens": [d.max_seq_len, d.max_prompt_seq_len],
            "truncation": d.truncation,
            "template": d.template,
            "caps": [d.max_train_samples, d.max_eval_samples],
            "dedup": d.dedup,
            "balance": d.balance_key,
            "tokenizer": tokenizer_fingerprint(tokenizer),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def build_phase(d: DataConfig, tokenizer, phase: int, seed: int, is_main: bool = True, barrier=lambda: None,
                tools: tuple = ()):
    """(train Dataset, eval Dataset, {split: Stats dict}) for ``phase``, through the cache; ``tools``: JSON
    schemas the prompts show (stage 1 of a run with tools).

    Rank 0 tokenises and writes the cache; the other ranks wait at ``barrier`` and read it.
    """
    import datasets

    root = Path(os.path.expanduser(d.data_output_path))
    sources = phase_sources(d, phase)
    target = root / f"phase{phase}-{PHASE_NAMES[phase]}-{cache_key(d, tokenizer, phase, seed, sources, tools)}"
    if is_main and not (target / "stats.json").is_file():
        rows = collect_rows(d, phase, seed, sources)
        stats = {}
        tmp = root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        try:
            for split, rs in rows.items():
                toks, st = tokenize_rows(rs, tokenizer, phase, d, tools)
                if split == "train" and not toks:
                    raise DataError(f"phase {phase}: no training rows left from {d.data_path} "
                                    f"({st.describe(split)}); check data_split and the length limits")
                stats[split] = asdict(st)
                if toks:
                    datasets.Dataset.from_list(toks).save_to_disk(str(tmp / split))
            (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    barrier()
    stats = json.loads((target / "stats.json").read_text())
    loaded = []
    for split in ("train", "eval"):
        p = target / split
        loaded.append(datasets.load_from_disk(str(p)) if (p / "dataset_info.json").is_file() else [])
    return loaded[0], loaded[1], stats, str(target)
