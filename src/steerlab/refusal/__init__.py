"""The refusal-direction pipeline (Arditi et al. 2024) and abliterated-model export."""

from .config import QUICK, RefusalConfig
from .pipeline import run_refusal

__all__ = ["QUICK", "RefusalConfig", "run_refusal"]
