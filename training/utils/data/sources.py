"""Raw-dataset adapters: every source becomes rows {prompt: [messages], chosen: str, rejected: str|None}.

Sources:
- DeepSpeed-Chat's hub datasets (Dahoas/rm-static, Dahoas/full-hh-rlhf,
  Dahoas/synthetic-instruct-gptj-pairwise, yitingxie/rlhf-reward-datasets,
  openai/webgpt_comparisons, stanfordnlp/SHP), loaded with ``datasets.load_dataset``.  As in
  DeepSpeed-Chat, a path that ends with one of these names (a local copy) uses its adapter.
- ``local/jsonfile``: ``data/train.json`` and ``data/eval.json`` under the working directory
  (DeepSpeed-Chat's layout), or ``local/jsonfile:DIR``.
- a ``.json`` (list), ``.jsonl`` or ``.parquet`` file, a directory with ``train.*`` / ``eval.*`` (or
  ``test.*``), a ``datasets.save_to_disk`` directory, or any other hub dataset id.
  Rows: ``{prompt, chosen, rejected}`` (keys configurable), or chat rows ``{messages: [...]}``
  whose last assistant turn is the answer; prompt/chosen/rejected may also be message lists. A row
  with a prompt and no answer (or chat messages ending with a user turn) is a prompt for stage 3;
  every other column of a row travels with it (``_columns``) to stage 3's reward functions.
- ``bundled``: the generated verifiable dataset.
- ``collected:DIR``: the prompts a server collected (``chat.py --serve --collect DIR``): each distinct
  conversation of ``DIR/conversations.jsonl`` that ends with a user turn, as a prompt for stage 3.
Every row is validated; a bad one raises DataError naming file, row and field.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from .format import ROLES, to_messages

log = logging.getLogger("speedchat")


class DataError(ValueError):
    """Input data that cannot be used; the message names file, row and field."""


@dataclass
class Keys:
    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    messages: str = "messages"
    group: str = ""            # a field kept as the row's group (for --balance_key); "" keeps none


@dataclass
class Source:
    name: str
    fingerprint: str                        # changes whenever the source's content may change
    load: Callable[[], dict]                # -> {"train": rows, "eval": rows or None}
    sft_turns: Optional[Callable[[list], list]] = None   # stage 1's rows from a slice's rows (one per turn)


# --------------------------------------------------------------------------- validation

def _err(where: str, row: int, field: str, msg: str) -> DataError:
    return DataError(f"{where}: row {row}: field '{field}': {msg}")


def _text(value, where, row, field, required=True) -> Optional[str]:
    if value is None:
        if required:
            raise _err(where, row, field, "missing")
        return None
    if isinstance(value, list):  # a message list holding the answer
        value = _messages(value, where, row, field)
        assistant = [m["content"] for m in value if m["role"] == "assistant"]
        if not assistant:
            raise _err(where, row, field, "message list has no assistant turn")
        value = assistant[-1]
    if not isinstance(value, str):
        raise _err(where, row, field, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise _err(where, row, field, "empty")
    _not_huge(value, where, row, field)
    return value


MAX_FIELD_CHARS = 1_000_000


def _not_huge(value: str, where, row, field) -> None:
    """A field this long is a broken export, not a training row (it would only be truncated)."""
    if len(value) > MAX_FIELD_CHARS:
        raise _err(where, row, field, f"{len(value):,} characters; the limit is {MAX_FIELD_CHARS:,}")


def _messages(value, where, row, field) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise _err(where, row, field, "expected a non-empty list of {role, content} messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise _err(where, row, f"{field}[{i}]", "expected an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise _err(where, row, f"{field}[{i}].role", f"unknown role {m['role']!r} (use {', '.join(ROLES)})")
        if not isinstance(m["content"], str):
            raise _err(where, row, f"{field}[{i}].content",
                       f"expected a string, got {type(m['content']).__name__}")
        _not_huge(m["content"], where, row, f"{field}[{i}].content")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def normalise_row(obj, where: str, row: int, keys: Keys) -> dict:
    """A user row (pair, prompt only, or chat) -> canonical row; DataError when it cannot be used.
    The row's other columns travel with it as ``_columns`` (to stage 3's reward functions)."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: row {row}: expected a JSON object, got {type(obj).__name__}")
    out = _canonical(obj, where, row, keys)
    used = {keys.prompt, keys.chosen, keys.rejected, keys.messages}
    columns = {k: v for k, v in obj.items() if k not in used and not str(k).startswith("_")}
    if columns:
        try:
            json.dumps(columns)
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: row {row}: a column is not JSON data ({e})") from None
        out["_columns"] = columns
    if keys.group and keys.group in obj:
        g = obj[keys.group]
        if not isinstance(g, (str, int)) or isinstance(g, bool):
            raise _err(where, row, keys.group, f"a group must be a string or an integer, got {type(g).__name__}")
        out["_group"] = str(g)
    return out


def _canonical(obj: dict, where: str, row: int, keys: Keys) -> dict:
    if keys.messages in obj and keys.prompt not in obj:
        msgs = _messages(obj[keys.messages], where, row, keys.messages)
        if msgs[-1]["role"] == "user":          # a prompt only (stage 3): the conversation so far
            return {"prompt": msgs, "chosen": None, "rejected": None, "_src": where, "_row": row}
        if msgs[-1]["role"] != "assistant":
            raise _err(where, row, keys.messages, "last message must be the assistant's answer or a user turn")
        if not msgs[-1]["content"].strip():
            raise _err(where, row, f"{keys.messages}[{len(msgs) - 1}].content", "empty")
        if not any(m["role"] == "user" for m in msgs[:-1]):
            raise _err(where, row, keys.messages, "no user turn before the answer")
        rejected = _text(obj.get(keys.rejected), where, row, keys.rejected, required=False)
        return {"prompt": msgs[:-1], "chosen": msgs[-1]["content"], "rejected": rejected,
                "_src": where, "_row": row}
    if keys.prompt not in obj:
        raise _err(where, row, keys.prompt, f"missing (row has keys {sorted(obj)})")
    p = obj[keys.prompt]
    if isinstance(p, list):
        prompt = _messages(p, where, row, keys.prompt)
    elif isinstance(p, str):
        if not p.strip():
            raise _err(where, row, keys.prompt, "empty")
        _not_huge(p, where, row, keys.prompt)
        prompt = to_messages(p)
    else:
        raise _err(where, row, keys.prompt, f"expected a string or message list, got {type(p).__name__}")
    chosen = _text(obj.get(keys.chosen), where, row, keys.chosen, required=False)
    rejected = _text(obj.get(keys.rejected), where, row, keys.rejected, required=False)
    if chosen is None and rejected is not None:
        raise _err(where, row, keys.chosen, "missing (the row has a rejected answer, so it needs the chosen one)")
    # no chosen answer: a prompt-only row (stage 3); stages 1 and 2 refuse it
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "_src": where, "_row": row}


# --------------------------------------------------------------------------- local files

def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not valid UTF-8 ({e.reason})") from None


def jsonl_objects(path: Path, journal: bool = False):
    """(row number, parsed JSON) of each non-blank line of a JSONL file; DataError naming the row. ``journal``: the
    file is one a server appends to (``applications/journal.py``), so a last line without its newline is one being
    written, or torn by a kill: left out, with a warning."""
    text = _utf8(path)
    if journal and text and not text.endswith("\n"):
        cut = text.rfind("\n") + 1
        log.warning("%s: its last line has no newline yet (%d characters: being written, or cut short by a kill); "
                    "left out", path, len(text) - cut)
        text = text[:cut]
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: row {i}: bad JSON at column {e.colno}: {e.msg}") from None


def first_of_each(rows, key: str, where) -> Iterator[tuple[int, object]]:
    """``rows`` ((row number, object), as ``jsonl_objects`` gives them) without an object whose ``key`` an earlier
    object already had: the first is kept, each dropped one warned with both rows."""
    seen: dict = {}
    for row, obj in rows:
        k = obj.get(key) if isinstance(obj, dict) else None
        if k is not None and k in seen:
            log.warning("%s: row %d: %s %r already appears at row %d; dropped", where, row, key, k, seen[k])
            continue
        if k is not None:
            seen[k] = row
        yield row, obj


def read_rows(path: Path, keys: Keys) -> list[dict]:
    """Parse and validate a .json (list of rows) or .jsonl file."""
    where = str(path)
    rows = []
    if path.suffix.lower() == ".jsonl":
        rows = [normalise_row(obj, where, i, keys) for i, obj in jsonl_objects(path)]
    else:
        text = _utf8(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: bad JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
        if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
            data = next(iter(data.values()))  # {"data": [...]} wrappers
        if not isinstance(data, list):
            raise DataError(f"{where}: expected a JSON list of rows, got {type(data).__name__}")
        rows = [normalise_row(obj, where, i, keys) for i, obj in enumerate(data, start=1)]
    if not rows:
        raise DataError(f"{where}: no rows")
    return rows


def _find(directory: Path, stems: tuple[str, ...]) -> Optional[Path]:
    for stem in stems:
        for ext in (".jsonl", ".json"):
            if (directory / f"{stem}{ext}").is_file():
                return directory / f"{stem}{ext}"
    return None


def _local_source(name: str, train: Path, evalp: Optional[Path], keys: Keys) -> Source:
    files = [p for p in (train, evalp) if p is not None]
    fp = json.dumps([[str(p.resolve()), _file_digest(p)] for p in files] + [vars(keys)])

    def load():
        return {"train": read_rows(train, keys), "eval": read_rows(evalp, keys) if evalp else None}

    return Source(name, fp, load)


def dataset_rows(ds, where: str, keys: Keys) -> list[dict]:
    """Canonical rows of a ``datasets`` split (its columns as in a JSONL file)."""
    rows = [normalise_row(dict(r), where, i, keys) for i, r in enumerate(ds, start=1)]
    if not rows:
        raise DataError(f"{where}: no rows")
    return rows


def _datasets_source(spec: str, fingerprint: str, open_ds, keys: Keys) -> Source:
    """A source read through ``datasets``: ``open_ds()`` gives a DatasetDict (or one Dataset, as train)."""
    def load():
        try:
            ds = open_ds()
        except Exception as e:  # noqa: BLE001 - re-raised naming the dataset the user gave
            raise DataError(f"{spec}: cannot load it with datasets: {type(e).__name__}: {e}") from e
        if not hasattr(ds, "keys"):
            return {"train": dataset_rows(ds, spec, keys), "eval": None}
        train = next((s for s in ("train",) if s in ds), None)
        if train is None:
            raise DataError(f"{spec}: no 'train' split (has {list(ds)})")
        ev = next((s for s in ("eval", "test", "validation") if s in ds), None)
        return {"train": dataset_rows(ds[train], f"{spec} [{train}]", keys),
                "eval": dataset_rows(ds[ev], f"{spec} [{ev}]", keys) if ev else None}

    return Source(spec, json.dumps([fingerprint, vars(keys)]), load)


def local_source(spec: str, keys: Keys) -> Source:
    if spec == "local/jsonfile" or spec.startswith("local/jsonfile:"):
        root = Path(spec.split(":", 1)[1]) if ":" in spec else Path.cwd() / "data"
        train, evalp = _find(root, ("train",)), _find(root, ("eval", "test"))
        if train is None or evalp is None:
            raise DataError(f"local/jsonfile: expected {root}/train.json and {root}/eval.json")
        return _local_source(spec, train, evalp, keys)
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix.lower() == ".parquet":
        import datasets

        return _datasets_source(spec, _file_digest(p), lambda: datasets.load_dataset("parquet", data_files={
            "train": str(p)}), keys)
    if p.is_file():
        if p.suffix.lower() not in (".json", ".jsonl"):
            raise DataError(f"{p}: unsupported file type (use .json, .jsonl or .parquet)")
        return _local_source(spec, p, None, keys)
    if p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "dataset_info.json").is_file()):
        import datasets       # a datasets.save_to_disk directory

        digest = json.dumps(sorted([str(f.relative_to(p)), _file_digest(f)] for f in p.rglob("*") if f.is_file()))
        return _datasets_source(spec, digest, lambda: datasets.load_from_disk(str(p)), keys)
    if p.is_dir():
        train = _find(p, ("train",))
        if train is None:
            raise DataError(f"{p}: directory has no train.json or train.jsonl")
        return _local_source(spec, train, _find(p, ("eval", "test", "validation")), keys)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and Path(spec).suffix.lower() not in (".json", ".jsonl", ".parquet"):
        import datasets       # any other hub dataset: its columns read as a JSONL file's

        return _datasets_source(spec, spec, lambda: datasets.load_dataset(spec), keys)
    raise DataError(f"data path {spec!r}: no such file or directory, and not a dataset name (a hub id such as "
                    f"org/name, {', '.join(sorted(HUB_ADAPTERS))}, local/jsonfile, bundled, collected:DIR)")


# --------------------------------------------------------------------------- hub datasets

class _Bad(Exception):
    """A hub row field of the wrong type: (field, message)."""


def _str(r, key: str) -> str:
    v = r[key]
    if not isinstance(v, str):
        raise _Bad(key, f"expected a string, got {type(v).__name__}")
    return v


def _num(r, key: str) -> float:
    v = r[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(key, f"expected a number, got {type(v).__name__}")
    return v


def _hh(r):  # Dahoas/rm-static, Dahoas/full-hh-rlhf: prompt is a Human/Assistant transcript
    return _str(r, "prompt"), _str(r, "chosen"), _str(r, "rejected")


def _gptj(r):
    return _str(r, "prompt"), _str(r, "chosen"), _str(r, "rejected")


def _yitingxie(r):
    return _str(r, "prompt"), _str(r, "chosen").split("Assistant:")[-1], _str(r, "rejected").split("Assistant:")[-1]


_CITE = re.compile(r"\s*\[\d+(?:,\s*\d+)*\]")


def _webgpt(r):
    q = r["question"]
    if isinstance(q, dict):
        q = _str(q, "full_text") if "full_text" in q else None
    if not isinstance(q, str):
        raise _Bad("question", "expected a string or an object with 'full_text'")
    s0, s1 = _num(r, "score_0"), _num(r, "score_1")
    if s0 == s1:
        return None  # no preference: skipped
    a0, a1 = (_CITE.sub("", _str(r, k)).strip() for k in ("answer_0", "answer_1"))
    return (q, a0, a1) if s0 > s1 else (q, a1, a0)


def _shp(r):
    a, b = _str(r, "human_ref_A"), _str(r, "human_ref_B")
    if r["labels"] not in (0, 1) or isinstance(r["labels"], bool):
        raise _Bad("labels", f"expected 0 or 1, got {r['labels']!r:.40}")
    return (_str(r, "history"), a, b) if r["labels"] == 1 else (_str(r, "history"), b, a)


# name -> (adapter, train split, eval split or None)
HUB_ADAPTERS: dict[str, tuple[Callable, str, Optional[str]]] = {
    "Dahoas/rm-static": (_hh, "train", "test"),
    "Dahoas/full-hh-rlhf": (_hh, "train", "test"),
    "Dahoas/synthetic-instruct-gptj-pairwise": (_gptj, "train", None),
    "yitingxie/rlhf-reward-datasets": (_yitingxie, "train", "test"),
    "openai/webgpt_comparisons": (_webgpt, "train", None),
    "stanfordnlp/SHP": (_shp, "train", "validation"),
}


def _hub_rows(ds, name: str, split: str, adapter) -> list[dict]:
    rows = []
    where = f"{name} [{split}]"
    for i, r in enumerate(ds, start=1):
        try:
            triple = adapter(r)
        except KeyError as e:
            raise _err(where, i, str(e.args[0]), f"missing (row has keys {sorted(r)})") from None
        except _Bad as e:
            raise _err(where, i, e.args[0], e.args[1]) from None
        if triple is None:
            continue
        p, c, rj = triple
        rows.append(normalise_row({"prompt": p, "chosen": c, "rejected": rj}, where, i, Keys()))
    return rows


def hub_source(spec: str, adapter_name: str) -> Source:
    adapter, train_split, eval_split = HUB_ADAPTERS[adapter_name]
    local = Path(spec).expanduser()
    fp = spec
    if local.exists():
        fp = json.dumps(sorted([str(p), _file_digest(p)] for p in local.rglob("*") if p.is_file()))

    def load():
        import datasets

        ds = datasets.load_dataset(str(local) if local.exists() else spec)
        if train_split not in ds:
            raise DataError(f"{spec}: no '{train_split}' split (has {list(ds)})")
        out = {"train": _hub_rows(ds[train_split], spec, train_split, adapter), "eval": None}
        if eval_split and eval_split in ds:
            out["eval"] = _hub_rows(ds[eval_split], spec, eval_split, adapter)
        return out

    return Source(spec, fp, load)


def bundled_source(size: int, seed: int = 0, group: str = "", tools: bool = False) -> Source:
    """The bundled rows; ``group="task"`` keeps each row's task name as its group. With ``tools``
    (``bundled-tools``) stage 1 learns the calculator: each math row becomes its call and its answer
    after the result (``bundled.calculator_turns``); the other stages see the plain rows."""
    from . import bundled

    def load():
        tr, ev = bundled.train_eval(size, seed)
        keys = Keys(group=group)
        return {"train": [normalise_row(r, "bundled", i, keys) for i, r in enumerate(tr, 1)],
                "eval": [normalise_row(r, "bundled", i, keys) for i, r in enumerate(ev, 1)]}

    if tools:
        return Source("bundled-tools", f"bundled-tools-v{bundled.VERSION}:{size}:{seed}", load,
                      bundled.calculator_turns)
    return Source("bundled", f"bundled-v{bundled.VERSION}:{size}:{seed}", load)


# a collection directory's files (``chat.py --serve --collect DIR``; ``applications/collect.py`` writes them)
COLLECTED_FILES = {"conversations": "conversations.jsonl", "feedback": "feedback.jsonl",
                   "comparisons": "comparisons.jsonl", "verdicts": "comparisons.labels.jsonl"}
COLLECTED = "collected:"


def collected_conversations(directory: Path) -> list[tuple[int, dict]]:
    """(row, record) of every answer ``directory`` collected, a repeated id once (the first, warned)."""
    path = directory / COLLECTED_FILES["conversations"]
    if not path.is_file():
        raise DataError(f"{directory}: no {COLLECTED_FILES['conversations']} (a collection directory is written by "
                        f"chat.py --serve --collect {directory})")
    out = []
    for row, obj in first_of_each(jsonl_objects(path, journal=True), "id", path):
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not isinstance(obj.get("messages"), list):
            raise DataError(f"{path}: row {row}: expected a collected answer with 'id' and 'messages'")
        out.append((row, obj))
    return out


def plain_conversation(messages: list) -> bool:
    """Whether every turn of a collected conversation is plain text (no tool calls, whose content may be null)."""
    return all(isinstance(m, dict) and isinstance(m.get("content"), str) and not m.get("tool_calls")
               for m in messages)


def collected_source(spec: str, keys: Keys) -> Source:
    """``collected:DIR``: each distinct conversation the server answered that ends with a user turn (a
    prompt for stage 3, the served answer and its version among its columns). Conversations that end
    otherwise (a tool result) or hold tool calls are skipped and counted in the log."""
    directory = Path(spec[len(COLLECTED):]).expanduser()
    path = directory / COLLECTED_FILES["conversations"]
    if not path.is_file():
        collected_conversations(directory)      # raises, naming the file

    def load():
        rows, seen, skipped = [], set(), 0
        for row, obj in collected_conversations(directory):
            msgs = obj["messages"]
            if not plain_conversation(msgs) or msgs[-1].get("role") != "user":
                skipped += 1
                continue
            key = json.dumps(msgs, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            rows.append(normalise_row({"messages": msgs, "answer": obj.get("answer"), "version": obj.get("version")},
                                      str(path), row, Keys(group=keys.group)))
        if skipped:
            log.warning("%s: %d collected conversation(s) skipped: they end with a tool result or hold tool calls "
                        "(stage 3 takes conversations that end with a user turn)", path, skipped)
        if not rows:
            raise DataError(f"{path}: no conversation that ends with a user turn: nothing to train on")
        log.info("%s: %d distinct prompts", path, len(rows))
        return {"train": rows, "eval": None}

    return Source(spec, json.dumps([str(path.resolve()), _file_digest(path)]), load)


BUNDLED = ("bundled", "bundled-tools")     # the generated set, plain or with its calculator turns for stage 1


def only_bundled(data_path: list[str]) -> bool:
    """Whether every source is the bundled set (then its checker and evaluation sets judge the run)."""
    return all(spec in BUNDLED for spec in data_path)


def get_source(spec: str, keys: Keys, bundled_size: int = 4000) -> Source:
    if spec in BUNDLED:
        return bundled_source(bundled_size, group=keys.group, tools=spec == "bundled-tools")
    if spec.startswith(COLLECTED):
        return collected_source(spec, keys)
    for name in HUB_ADAPTERS:
        if spec == name or spec.rstrip("/").endswith(name):
            return hub_source(spec, name)
    return local_source(spec, keys)

