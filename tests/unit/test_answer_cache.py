"""The closing evaluation's answer cache: a hit only for the same model files, prompts and settings."""

import pytest
import torch

import inference.answer_cache as answer_cache
import inference.passrate as passrate
from training.utils.model import load_causal_lm

PROMPTS = ["Compute 2 + 3. Reply with the number only.", "Write one sentence about rain. Use only lowercase letters.",
           "Name 2 fruits, one per line, each line starting with \"- \"."]


@pytest.fixture()
def model_dir(tmp_path, tiny_tok, monkeypatch):
    monkeypatch.setattr(answer_cache, "CACHE", tmp_path / "cache")
    torch.manual_seed(0)
    m = load_causal_lm("tiny", tiny_tok)
    d = tmp_path / "model"
    m.save_pretrained(d)
    tiny_tok.save_pretrained(d)
    return d


def _no_generation(*a, **k):
    raise AssertionError("generate called although the answers are cached")


def test_same_model_and_settings_reuse_the_answers(model_dir, monkeypatch):
    first = passrate.evaluate_model(str(model_dir), prompts=PROMPTS, max_new_tokens=5, batch_size=2, cache=True)
    assert first["cached"] is False
    assert len(list(answer_cache.cache_dir().glob("*.json"))) == 1
    monkeypatch.setattr(passrate, "generate", _no_generation)
    again = passrate.evaluate_model(str(model_dir), prompts=PROMPTS, max_new_tokens=5, batch_size=2, cache=True)
    assert again["cached"] is True
    assert [a["answer"] for a in again["answers"]] == [a["answer"] for a in first["answers"]]
    assert again["pass_rate"] == first["pass_rate"]
    # another setting is another entry: the guarded generate is reached
    with pytest.raises(AssertionError, match="generate called"):
        passrate.evaluate_model(str(model_dir), prompts=PROMPTS, max_new_tokens=6, batch_size=2, cache=True)
    with pytest.raises(AssertionError, match="generate called"):
        passrate.evaluate_model(str(model_dir), prompts=PROMPTS[:2], max_new_tokens=5, batch_size=2, cache=True)


def test_changed_weights_are_a_miss(model_dir, tiny_tok):
    assert passrate.evaluate_model(str(model_dir), prompts=PROMPTS, max_new_tokens=5, batch_size=2,
                                   cache=True)["cached"] is False
    m = load_causal_lm(str(model_dir), tiny_tok)
    with torch.no_grad():
        m.lm_head.weight.mul_(-1.0)        # another model, saved in the same directory
    m.save_pretrained(model_dir)
    second = passrate.evaluate_model(str(model_dir), prompts=PROMPTS, max_new_tokens=5, batch_size=2, cache=True)
    plain = passrate.evaluate_model(str(model_dir), prompts=PROMPTS, max_new_tokens=5, batch_size=2, cache=False)
    assert second["cached"] is False
    assert [a["answer"] for a in second["answers"]] == [a["answer"] for a in plain["answers"]]


def test_random_tiny_models_are_never_cached(tiny_tok, tmp_path, monkeypatch):
    monkeypatch.setattr(answer_cache, "CACHE", tmp_path / "cache")
    assert passrate.cacheable_dir("tiny") is None
    r = passrate.evaluate_model("tiny", prompts=PROMPTS[:1], max_new_tokens=2, batch_size=1, cache=True)
    assert r["cached"] is False and not (tmp_path / "cache").exists()


def test_corrupt_entry_names_the_file(model_dir):
    key = answer_cache.answers_key(model_dir, PROMPTS, max_new_tokens=5)
    answer_cache.store(key, ["a"])
    (answer_cache.cache_dir() / f"{key}.json").write_text("{not json")
    with pytest.raises(ValueError, match=f"{key}.json: corrupt"):
        answer_cache.load(key)
