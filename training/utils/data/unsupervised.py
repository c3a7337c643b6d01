"""The unsupervised language-model data of stage 3 (InstructGPT's PPO-ptx, DeepSpeed-Chat's
``--unsupervised_dataset_name``): a text dataset read with ``datasets.load_dataset``, tokenised, joined
and cut into blocks of one length, each block trained on whole (``prompt_len`` 0 for ``SFTCollator``)."""
from __future__ import annotations

from pathlib import Path

from .sources import DataError

BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load_text_split(name: str, config_name: str = ""):
    """The ``train`` split of a hub dataset id, a local dataset directory, or one local file
    (.txt/.json/.jsonl/.parquet/.csv)."""
    from datasets import load_dataset

    path = Path(name).expanduser()
    try:
        if path.is_file():
            if path.suffix.lower() not in BUILDERS:
                raise DataError(f"{name}: unsupported file type for --unsupervised_dataset_name (use one of "
                                f"{', '.join(sorted(BUILDERS))}, a dataset directory or a hub id)")
            ds = load_dataset(BUILDERS[path.suffix.lower()], data_files={"train": str(path)})
        else:
            ds = load_dataset(str(path) if path.is_dir() else name, config_name or None)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised naming the dataset the user gave
        raise DataError(f"--unsupervised_dataset_name {name}"
                        f"{f' (config {config_name})' if config_name else ''}: cannot load it: {e}") from e
    if "train" not in ds:
        raise DataError(f"--unsupervised_dataset_name {name}: no 'train' split (splits: {', '.join(ds)})")
    return ds["train"]


def blocks(ids: list[int], block: int) -> list[dict]:
    """Rows of exactly ``block`` consecutive ids (the remainder shorter than a block is dropped, as in
    DeepSpeed-Chat's ``group_texts``)."""
    return [{"input_ids": ids[i:i + block], "prompt_len": 0} for i in range(0, len(ids) - block + 1, block)]


def unsupervised_rows(name: str, config_name: str, tok, block: int, num_proc: int = 0) -> list[dict]:
    """``blocks`` of the dataset's ``text`` column (else its first column), its rows joined end to end."""
    split = load_text_split(name, config_name)
    column = "text" if "text" in split.column_names else split.column_names[0]
    split = split.filter(lambda r: isinstance(r[column], str) and bool(r[column].strip()))
    ids = split.map(lambda r: tok(r[column], add_special_tokens=False), batched=True, num_proc=num_proc or None,
                    remove_columns=split.column_names)["input_ids"] if len(split) else []
    rows = blocks([i for seq in ids for i in seq], block)
    if not rows:
        raise DataError(f"--unsupervised_dataset_name {name}: column '{column}' holds fewer than {block} tokens of "
                        f"text, not one block of max_prompt_seq_len + max_answer_seq_len")
    return rows
