"""Comparison data for the reward model: labellers, the policy's sampled answers ranked into pairs,
human-label files, and the reward model's on-policy AUC."""
