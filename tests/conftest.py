import os
import sys

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# DeepSpeed's CPU ops are compiled into this environment, not the user's cache: a fresh install builds
# them afresh, and nothing a run elsewhere left there (a half build, its lock) reaches the tests.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))


@pytest.fixture(scope="session")
def tiny_tok():
    from training.utils.model import load_tokenizer

    return load_tokenizer("tiny")


@pytest.fixture()
def cache_dir(tmp_path):
    return str(tmp_path / "cache")
