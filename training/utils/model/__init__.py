"""Model loading, LoRA and Hugging Face-format saving."""
from .loader import load_causal_lm, load_tokenizer, local_path, resolve
from .lora import apply_lora, is_peft, param_groups
from .reward import ValueModel, end_scores, load_reward_model
from .save import save_hf

__all__ = ["load_causal_lm", "load_tokenizer", "local_path", "resolve", "apply_lora", "is_peft",
           "param_groups", "save_hf", "ValueModel", "end_scores", "load_reward_model"]
