import copy

import pytest
import torch

from training.utils.config import LoraConfig, OptimConfig
from training.utils.model import apply_lora, load_causal_lm, resolve
from training.utils.model.loader import SMOLLM2_GGUF, local_path
from training.utils.model.lora import lora_targets, param_groups
from training.utils.model.save import gathered_state_dict, merge_lora_state_dict, save_hf


def test_resolve_names(tmp_path):
    assert resolve("1.3b").path == "facebook/opt-1.3b" and resolve("350m").kind == "hf"
    assert resolve("meta-llama/Llama-2-7b-hf").path == "meta-llama/Llama-2-7b-hf"
    assert resolve("tiny").kind == "tiny" and resolve("tiny-opt").kind == "tiny"
    s = resolve("smollm2-135m")
    assert s.kind == "gguf" and s.gguf_file == SMOLLM2_GGUF
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve(str(tmp_path / "m")).kind == "hf"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        resolve(str(tmp_path / "empty"))


def test_tiny_is_seeded(tiny_tok):
    a = load_causal_lm("tiny", tiny_tok, seed=3)
    b = load_causal_lm("tiny", tiny_tok, seed=3)
    c = load_causal_lm("tiny", tiny_tok, seed=4)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    opt = load_causal_lm("tiny-opt", tiny_tok)
    assert type(opt).__name__ == "OPTForCausalLM"


def test_lora_targets_and_groups(tiny_tok):
    m = load_causal_lm("tiny", tiny_tok)
    names = lora_targets(m, "")
    assert len(names) == 2 * 7 and not any("lm_head" in n for n in names)
    assert lora_targets(m, "layers.1.") == [n for n in names if "layers.1." in n]
    with pytest.raises(ValueError, match="matches no linear layer"):
        lora_targets(m, "decoder.layers.")
    pm = apply_lora(m, LoraConfig(lora_dim=4, only_optimize_lora=True))
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    groups = param_groups(pm, OptimConfig(), LoraConfig(lora_learning_rate=1e-3))
    assert len(groups) == 1 and groups[0]["lr"] == 1e-3
    pm2 = apply_lora(load_causal_lm("tiny", tiny_tok), LoraConfig(lora_dim=4))
    assert all(p.requires_grad for p in pm2.parameters())  # DeepSpeed-Chat: base trains too
    assert len(param_groups(pm2, OptimConfig(weight_decay=0.1), LoraConfig())) == 3


def test_lora_merge_matches_peft_and_save_loads_back(tmp_path, tiny_tok):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    pm = apply_lora(load_causal_lm("tiny", tiny_tok), LoraConfig(lora_dim=4, lora_alpha=8))
    with torch.no_grad():  # make the adapters non-zero
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    x = torch.randint(0, 1000, (2, 12))
    with torch.no_grad():
        want = pm(input_ids=x).logits
    merged = merge_lora_state_dict(pm, gathered_state_dict(pm, 0))
    assert not any("lora" in k or "base_layer" in k for k in merged)
    ref = copy.deepcopy(pm).merge_and_unload().state_dict()
    for k, v in merged.items():
        assert torch.allclose(v, ref[k], atol=1e-6), k
    save_hf(pm, tiny_tok, tmp_path / "out")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    with torch.no_grad():
        got = back(input_ids=x).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert (tmp_path / "out" / "model.safetensors").is_file()
    # the live model keeps its adapters
    with torch.no_grad():
        assert torch.allclose(pm(input_ids=x).logits, want)


def test_save_keeps_other_files_and_replaces_weights(tmp_path, tiny_tok):
    m = load_causal_lm("tiny", tiny_tok, seed=1)
    out = tmp_path / "o"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    save_hf(m, tiny_tok, out)
    save_hf(load_causal_lm("tiny", tiny_tok, seed=2), tiny_tok, out)
    assert (out / "metrics.jsonl").read_text() == "{}\n"
    assert not list(tmp_path.glob(".tmp-*"))
    from transformers import AutoModelForCausalLM

    back = AutoModelForCausalLM.from_pretrained(out)
    ref = load_causal_lm("tiny", tiny_tok, seed=2)
    assert torch.equal(back.model.layers[0].mlp.up_proj.weight, ref.model.layers[0].mlp.up_proj.weight)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_saved_files_get_the_umask_modes(tmp_path, tiny_tok, mask, mode):
    """The weights are not left 0600 (safetensors writes through a temporary file): every saved file
    has the mode a plain open() gives under the user's umask, like the configs beside it."""
    import os
    import stat

    old = os.umask(mask)
    try:
        save_hf(load_causal_lm("tiny", tiny_tok, seed=1), tiny_tok, tmp_path / "o")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "o").iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {mode}, modes


def test_smollm2_gguf_converts_once_and_loads():
    d = local_path("smollm2-135m")
    assert local_path("smollm2-135m") == d
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(d)
    assert c.model_type == "llama" and c.num_hidden_layers == 30
    assert getattr(c, "quantization_config", None) is None


def _train_forwards_equal(model) -> bool:
    model.train()
    ids = torch.arange(3, 19).view(2, 8)
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=ids).logits
    return torch.equal(a, b)


@pytest.mark.parametrize("kind", ["tiny", "tiny-opt"])
def test_dropout_reaches_the_modules(tiny_tok, kind):
    """Transformers copies dropout into module attributes at build time: set_dropout must reach them."""
    from transformers import AutoModelForCausalLM

    from training.utils.model.loader import set_dropout, tiny_config

    cfg = tiny_config(kind, tiny_tok)
    for key in ("dropout", "attention_dropout", "activation_dropout"):
        if hasattr(cfg, key):
            setattr(cfg, key, 0.3)                 # built with dropout, as OPT checkpoints are (0.1)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    assert not _train_forwards_equal(model)        # dropout is live in train mode
    set_dropout(model, 0.0)
    assert _train_forwards_equal(model)
    assert all(getattr(model.config, k) == 0.0 for k in ("dropout", "attention_dropout") if hasattr(model.config, k))
    # and the other way: a model built without dropout gets it through the loader's flag
    assert _train_forwards_equal(load_causal_lm(kind, tiny_tok, dropout=0.0))
    assert not _train_forwards_equal(load_causal_lm(kind, tiny_tok, dropout=0.3))
