"""Load a model by built-in name, Hugging Face id, local directory or ``.gguf`` file."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelNotAvailableError, first_line
from .adapter import ModelAdapter, blocks_of, get_adapter
from .registry import BUILTIN_MODELS, get_builtin

__all__ = ["LoadedModel", "ModelInfo", "config_hash", "load_model", "model_info"]

# Keys that describe the network itself; run-time switches and paths are left out so that the
# same weights loaded two ways hash the same.
_ARCH_KEYS = (
    "model_type",
    "hidden_size",
    "n_embd",
    "num_hidden_layers",
    "n_layer",
    "num_attention_heads",
    "n_head",
    "num_key_value_heads",
    "intermediate_size",
    "n_inner",
    "vocab_size",
    "head_dim",
    "rope_theta",
    "rms_norm_eps",
    "layer_norm_eps",
    "layer_norm_epsilon",
    "tie_word_embeddings",
    "hidden_act",
    "activation_function",
)


def config_hash(config: Any) -> str:
    """A short hash of the architecture fields of a transformers config."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    picked = {k: d[k] for k in _ARCH_KEYS if k in d}
    return hashlib.sha256(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelInfo:
    """Identity of a model, as recorded in every artifact."""

    model_id: str
    config_hash: str
    model_type: str
    n_layers: int
    d_model: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "config_hash": self.config_hash,
            "model_type": self.model_type,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
        }


def model_info(
    model: nn.Module, model_id: str | None = None, adapter: ModelAdapter | None = None
) -> ModelInfo:
    adapter = adapter or get_adapter(model)
    cfg = model.config
    emb = model.get_input_embeddings()
    return ModelInfo(
        model_id=model_id or str(getattr(cfg, "_name_or_path", "") or type(model).__name__),
        config_hash=config_hash(cfg),
        model_type=str(getattr(cfg, "model_type", "unknown")),
        n_layers=len(blocks_of(model, adapter)),
        d_model=int(emb.weight.shape[1]),
    )


@dataclass
class LoadedModel:
    """A model, its tokenizer, its adapter and its identity."""

    model: nn.Module
    tokenizer: Any
    adapter: ModelAdapter
    info: ModelInfo
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _dtype(name: str | torch.dtype) -> torch.dtype | str:
    if isinstance(name, torch.dtype) or name == "auto":
        return name
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(table)} or 'auto'")
    return table[name]


def _source(spec: str, say: Callable[[str], None]) -> tuple[str | Path, str, str | None]:
    """Where transformers loads ``spec`` from, the model id to record, and the GGUF file name
    (in the ``source`` directory) when ``spec`` is one."""
    builtin = get_builtin(spec)
    path = Path(spec).expanduser()
    if builtin is not None:
        from .fetch import ensure_builtin

        return ensure_builtin(builtin, say), builtin.name, None
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotAvailableError(f"GGUF file not found: {path}")
        return path.parent, str(path.resolve()), path.name
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(f"{path} is not a model directory (no config.json)")
        return path, str(path.resolve()), None
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return spec, spec, None  # a hub id: transformers resolves it (or the local HF cache does)
    raise ModelNotAvailableError(
        f"unknown model {spec!r}: not a built-in ({', '.join(BUILTIN_MODELS)}), "
        "a local directory, a .gguf file, or a Hugging Face id (org/name)"
    )


def load_model(
    spec: str,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    device_map: str | dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    adapter: dict[str, Any] | ModelAdapter | None = None,
    progress: Callable[[str], None] | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer in eval mode.

    Args:
        spec: a built-in name (``steerlab models``), a local directory, a ``.gguf`` file, or a
            Hugging Face id (needs hub access or a populated HF cache).
        device: where to put the model when ``device_map`` is not given.
        dtype: ``float32`` (default, exact on CPU), ``bfloat16``, ``float16`` or ``auto``.
        device_map: passed to transformers, e.g. ``"auto"`` to span several GPUs.
        trust_remote_code: off unless you ask for it.
        adapter: override for the layer adapter (see :func:`get_adapter`).
        progress: callback receiving one-line status messages.

    A directory holding a peft LoRA adapter (``adapter_config.json``, e.g. from
    ``steerlab organism``) loads its recorded base model with the adapter merged in; write
    ``BASE+ADAPTER_DIR`` to name the base yourself.

    Returns:
        A :class:`LoadedModel`.

    Example:
        >>> lm = load_model("smollm2-135m")  # doctest: +SKIP
        >>> lm.info.n_layers  # doctest: +SKIP
        30
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say = progress or (lambda _m: None)
    common = dict(device=device, dtype=dtype, device_map=device_map)
    common |= dict(trust_remote_code=trust_remote_code, adapter=adapter, progress=progress)
    lora = _adapter_spec(spec)
    if lora is not None:
        return _load_with_adapter(lora[0], lora[1], common, say)
    kwargs: dict[str, Any] = {"dtype": _dtype(dtype), "trust_remote_code": trust_remote_code}
    if device_map is not None:
        kwargs["device_map"] = device_map
    tok_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    source, model_id, gguf = _source(spec, say)
    if gguf is not None:
        kwargs["gguf_file"] = tok_kwargs["gguf_file"] = gguf
    say(f"loading {model_id}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **tok_kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as e:
        first = first_line(e)
        raise ModelNotAvailableError(f"could not load {spec!r}: {first}") from None
    if device_map is None:
        model.to(device)
    model.eval()
    ad = get_adapter(model, adapter)
    info = model_info(model, model_id, ad)
    # where the weights came from, for engines that load them themselves (vLLM)
    return LoadedModel(
        model,
        tokenizer,
        ad,
        info,
        extra={"source": str(Path(source) / gguf if gguf else source), "dtype": dtype},
    )


ADAPTER_CONFIG = "adapter_config.json"


def peft_for(adir: Path | None = None) -> Any:
    """The peft module, after checking that ``adir`` (if given) holds safetensors weights:
    steerlab never unpickles an adapter's ``.bin``."""
    if adir is not None and not (Path(adir) / "adapter_model.safetensors").is_file():
        raise ModelNotAvailableError(
            f"{adir} has no adapter_model.safetensors (steerlab does not unpickle .bin files)"
        )
    try:
        import peft
    except ImportError:  # pragma: no cover - peft is a dependency
        raise ModelNotAvailableError("LoRA adapters need peft: pip install peft") from None
    return peft


def _adapter_spec(spec: str) -> tuple[str, Path] | None:
    """``(base, adapter_dir)`` when ``spec`` names a LoRA adapter, else None."""
    path = Path(spec).expanduser()
    if path.is_dir() and (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file():
        try:
            base = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        except (OSError, json.JSONDecodeError) as e:
            raise ModelNotAvailableError(f"unreadable {path / ADAPTER_CONFIG}: {e}") from None
        if not base:
            raise ModelNotAvailableError(
                f"{path} is an adapter that does not name its base model; use BASE+{spec}"
            )
        return str(base), path
    if "+" in spec and not path.exists():
        base, _, rest = spec.rpartition("+")
        adir = Path(rest).expanduser()
        if not (adir / ADAPTER_CONFIG).is_file():
            raise ModelNotAvailableError(
                f"{rest!r} is not an adapter directory (no {ADAPTER_CONFIG})"
            )
        return base, adir
    return None


def _load_with_adapter(
    base: str, adir: Path, common: dict[str, Any], say: Callable[[str], None]
) -> LoadedModel:
    """The base model with the adapter merged: a plain transformers model, no peft wrapper."""
    PeftModel = peft_for(adir).PeftModel
    if _adapter_spec(base) is not None:
        raise ModelNotAvailableError(f"the base of {adir} is itself an adapter: {base!r}")
    lm = load_model(base, **common)
    say(f"merging the adapter in {adir}")
    try:
        merged = PeftModel.from_pretrained(lm.model, str(adir)).merge_and_unload()
    except (ValueError, KeyError, RuntimeError) as e:
        first = first_line(e)
        raise ModelNotAvailableError(f"adapter {adir} does not fit {base!r}: {first}") from None
    merged.eval()
    model_id = f"{lm.info.model_id}+{adir.resolve()}"
    info = replace(lm.info, model_id=model_id)
    return LoadedModel(merged, lm.tokenizer, lm.adapter, info, {"base": base, "adapter": str(adir)})
