"""Three-stage RLHF training: SFT, reward model, PPO."""
