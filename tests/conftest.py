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


@pytest.fixture(scope="module")
def chat_engine():
    """The chat engine on ``tiny`` with the plain template."""
    from applications.chat_engine import ChatEngine

    return ChatEngine("tiny", template="plain")


@pytest.fixture(scope="module")
def fuzz_client():
    """An in-process client of the chat server on ``tiny``, with small limits."""
    from fastapi.testclient import TestClient

    from applications.chat_engine import ChatEngine
    from applications.server import Limits, create_app

    return TestClient(create_app(ChatEngine("tiny", template="plain"), Limits(max_tokens=8, max_n=3)))


@pytest.fixture(scope="module")
def model_shapes(tmp_path_factory):
    """Configs with the shapes of OPT-1.3B, OPT-6.7B and Llama-2-7B (no weights)."""
    from transformers import LlamaConfig, OPTConfig

    d = tmp_path_factory.mktemp("shapes")
    OPTConfig(hidden_size=2048, ffn_dim=8192, num_hidden_layers=24, num_attention_heads=32, vocab_size=50272,
              word_embed_proj_dim=2048).save_pretrained(d / "opt-1.3b")
    OPTConfig(hidden_size=4096, ffn_dim=16384, num_hidden_layers=32, num_attention_heads=32, vocab_size=50272,
              word_embed_proj_dim=4096).save_pretrained(d / "opt-6.7b")
    LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                vocab_size=32000).save_pretrained(d / "llama-2-7b")
    return {name: d / name for name in ("opt-1.3b", "opt-6.7b", "llama-2-7b")}


@pytest.fixture(scope="module")
def h32_tok():
    """The tokenizer of ``tiny-h32`` (heads of 32, as vLLM's CPU kernels need), padding on the left."""
    from training.utils.model import load_tokenizer

    return load_tokenizer("tiny-h32", padding_side="left")


@pytest.fixture(scope="session")
def readme_quickstart(tmp_path_factory):
    """The README's first runnable block (the tiny pipeline through all three stages) run as written in a fresh
    directory, once per session: (the directory, the block, its result)."""
    from support.docs import ROOT, RUNNABLE, fresh_directory, run_block

    work = fresh_directory(tmp_path_factory.mktemp("readme"))
    block = RUNNABLE.findall((ROOT / "README.md").read_text())[0]
    return work, block, run_block(block, work)
