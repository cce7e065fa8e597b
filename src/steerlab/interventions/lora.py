"""A LoRA adapter (peft) as an intervention: a saved adapter to evaluate, or a fresh one to train.

peft injects its layers into the model's own module tree; on exit they are unloaded (the
original modules come back, their weights never merged), and the ``requires_grad`` flags, the
train/eval modes and the attributes peft added are put back, on any exit, Ctrl-C included.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ModelNotAvailableError, SteerlabError, first_line
from ..models.load import LoadedModel, peft_for

__all__ = ["LoRA"]


def _strip_peft_layers(model: Any) -> None:
    """Put back the base layer of every peft layer still in the tree."""
    for name, mod in list(model.named_modules()):
        base = getattr(mod, "base_layer", None)
        if name and base is not None and type(mod).__module__.startswith("peft."):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, base)


@dataclass(frozen=True)
class LoRA:
    """Apply a LoRA adapter while the context is open.

    Exactly one of:
        path: a saved peft adapter directory (``adapter_config.json`` +
            ``adapter_model.safetensors``).
        config: a ``peft.LoraConfig`` for a new, randomly initialised adapter (B = 0, so the
            model's outputs are unchanged until it is trained).

    Args:
        trainable: leave the adapter's parameters trainable (``requires_grad``); the yielded
            model's ``extra["peft_model"]`` is the ``PeftModel``, for ``save_pretrained``.

    Example:
        >>> with LoRA(path="runs/organism").applied(lm) as treated:  # doctest: +SKIP
        ...     steerlab.generate(treated.model, treated.tokenizer, prompts)
    """

    path: str | os.PathLike[str] | None = None
    config: Any = None
    trainable: bool = False
    state: Any = None  # adapter weights loaded after injection (a trained checkpoint's)
    name: str = "lora"

    def __post_init__(self) -> None:
        if (self.path is None) == (self.config is None):
            raise SteerlabError("LoRA needs exactly one of path= (a saved adapter) or config=")

    def ops(self) -> list[dict[str, Any]]:
        """The adapter's source (a saved path, or a config for a fresh one): a trained adapter
        lives in the model while applied; save it to rebuild it elsewhere."""
        src = {"path": str(self.path)} if self.path is not None else {"config": self.config}
        if self.state is not None:
            src["state"] = self.state
        return [{"kind": "lora", "trainable": self.trainable, **src}]

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "lora", "trainable": self.trainable}
        if self.path is not None:
            out["path"] = str(self.path)
        else:
            cfg = self.config
            out |= {"rank": getattr(cfg, "r", None), "alpha": getattr(cfg, "lora_alpha", None)}
            tm = getattr(cfg, "target_modules", None)
            out["target_modules"] = sorted(tm) if isinstance(tm, (set, list)) else tm
        return out

    def _wrap(self, lm: LoadedModel) -> Any:
        peft = peft_for(None if self.path is None else Path(self.path))
        if self.config is not None:
            return peft.get_peft_model(lm.model, self.config)
        try:
            return peft.PeftModel.from_pretrained(
                lm.model, str(self.path), is_trainable=self.trainable
            )
        except (ValueError, KeyError, RuntimeError) as e:
            first = first_line(e)
            raise ModelNotAvailableError(f"adapter {self.path} does not fit: {first}") from None

    @contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[LoadedModel]:
        model = lm.model
        grads = {n: p.requires_grad for n, p in model.named_parameters()}
        modes = {n: m.training for n, m in model.named_modules()}
        attrs = set(vars(model))
        peft_model = None
        try:
            peft_model = self._wrap(lm)
            if self.state is not None:
                from peft import set_peft_model_state_dict

                set_peft_model_state_dict(peft_model, self.state)
            if not self.trainable:
                for p in model.parameters():
                    p.requires_grad_(False)
            # peft edits the module tree in place: lm.model itself now runs the adapter, so
            # hooks and adapters found on lm.model keep working beside it.
            yield replace(lm, extra={**lm.extra, "peft_model": peft_model})
        finally:
            if peft_model is not None:
                peft_model.unload()
            _strip_peft_layers(model)  # an injection cut short leaves no handle to unload
            for n, p in model.named_parameters():
                p.requires_grad_(grads.get(n, p.requires_grad))
            for n, m in model.named_modules():
                m.training = modes.get(n, m.training)
            for key in set(vars(model)) - attrs:
                delattr(model, key)
