import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_tok():
    from training.utils.model import load_tokenizer

    return load_tokenizer("tiny")


@pytest.fixture()
def cache_dir(tmp_path):
    return str(tmp_path / "cache")
