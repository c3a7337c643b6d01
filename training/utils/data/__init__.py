"""Datasets: sources, the bundled verifiable set and its checker, phase split, tokenisation, collators."""
from .collate import PairCollator, PromptCollator, SFTCollator
from .pipeline import build_phase, collect_rows, phase_indices
from .sources import DataError

__all__ = ["PairCollator", "PromptCollator", "SFTCollator", "build_phase", "collect_rows",
           "phase_indices", "DataError"]
