"""Inference tools: batch generation, the checker pass-rate, model comparison."""
