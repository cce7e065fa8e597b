"""Model loading (built-in offline models, HF ids, local dirs, GGUF), adapter and chat."""

from .adapter import ARCH_TABLE, ModelAdapter, get_adapter
from .chat import Batch, encode, format_prompt
from .load import LoadedModel, ModelInfo, load_model, model_info
from .registry import BUILTIN_MODELS, DEFAULT_MODEL

__all__ = [
    "ARCH_TABLE",
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "Batch",
    "LoadedModel",
    "ModelAdapter",
    "ModelInfo",
    "encode",
    "format_prompt",
    "get_adapter",
    "load_model",
    "model_info",
]
