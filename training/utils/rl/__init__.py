"""RL maths (pure torch, no DeepSpeed) and, on top of it, the experience maker and trainers."""
