"""vLLM as the rollout engine: the same tokens as the updated Hugging Face model after training steps
(full fine-tuning, LoRA, ZeRO-3), the log-prob gap, stage 3 end to end with its resume, clear errors.

vLLM's CPU attention runs head sizes >= 32, so these use ``tiny-h32`` (``tiny`` has heads of 16, which
is the unsupported-model case).
"""


import sys

import pytest

from training.utils.config import LoraConfig
from training.utils.model import apply_lora, load_causal_lm
from training.utils.vllm_engine import VLLMUnavailable, hf_weights, import_vllm

KIND = "tiny-h32"     # Llama with heads of 32, as vLLM's CPU kernels need


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)              # import vllm -> ImportError
    with pytest.raises(VLLMUnavailable, match="--rollout_engine vllm needs the vllm package.*pip install vllm"):
        import_vllm()


def test_lora_weights_reach_vllm_under_the_plain_names(h32_tok):
    model = apply_lora(load_causal_lm(KIND, h32_tok, seed=3), LoraConfig(lora_dim=4, lora_alpha=8))
    names = [n for n, _ in hf_weights(model.get_base_model())]
    plain = [n for n, _ in load_causal_lm(KIND, h32_tok, seed=3).named_parameters()]
    assert names == plain
