"""Helpers for the peer workers (run by a peer's own venv python: no steerlab import here).

A worker loads the model steerlab cached, times a plain forward over the same batches as its
own baseline, times the peer's training calls, and writes ``result.json`` plus ``.npy``
vectors into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import contrast_pairs, interleaved, med, monitor_for  # noqa: F401


def worker_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n-pairs", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-wait", type=float, default=120.0)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads > 0:
        import torch

        torch.set_num_threads(a.threads)
    return a


def versions(*pkgs: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for p in pkgs:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out


def compat_model_dir(src: Path, dst: Path) -> list[str]:
    """Write a copy of a transformers-5 model dir that transformers 4.x reads correctly.

    Weights and tokenizer.json are symlinked; only the small JSON files are rewritten.
    Returns what was changed. Without this, 4.x silently reads ``rope_parameters`` as an
    unknown field and falls back to rope_theta=10000 (wrong activations, no error), and
    cannot import the ``TokenizersBackend`` tokenizer class.
    """
    notes: list[str] = []
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name in ("config.json", "tokenizer_config.json"):
            continue
        target = dst / f.name
        if not target.exists():
            target.symlink_to(f.resolve())
    cfg = json.loads((src / "config.json").read_text())
    rp = cfg.pop("rope_parameters", None)
    if isinstance(rp, dict):
        if "rope_theta" in rp and "rope_theta" not in cfg:
            cfg["rope_theta"] = rp["rope_theta"]
            notes.append("config.json: rope_parameters.rope_theta -> "
                         f"rope_theta={rp['rope_theta']}")
        extra = {k: v for k, v in rp.items() if k != "rope_theta"}
        if extra.get("rope_type", "default") != "default":
            cfg["rope_scaling"] = extra
            notes.append(f"config.json: rope_parameters -> rope_scaling={extra}")
        else:
            cfg["rope_scaling"] = None
    if "dtype" in cfg and "torch_dtype" not in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
        notes.append("config.json: dtype -> torch_dtype")
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    tcfg = json.loads((src / "tokenizer_config.json").read_text())
    if tcfg.get("tokenizer_class") == "TokenizersBackend":
        tcfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        notes.append("tokenizer_config.json: tokenizer_class TokenizersBackend -> "
                     "PreTrainedTokenizerFast (same tokenizer.json)")
    (dst / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2))
    return notes


def load_hf(model_dir: str, out: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Load model and tokenizer with this venv's transformers; a compat copy under 4.x."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(model_dir)
    info: dict[str, Any] = {"source_dir": str(src), "compat_copy": None, "compat_notes": []}
    major = int(transformers.__version__.split(".")[0])
    path = src
    if major < 5:
        path = out / "compat-model"
        if path.exists():
            shutil.rmtree(path)
        info["compat_notes"] = compat_model_dir(src, path)
        info["compat_copy"] = str(path)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    model.to(torch.float32)
    want = json.loads((src / "config.json").read_text())
    want_theta = (want.get("rope_parameters") or {}).get("rope_theta", want.get("rope_theta"))
    got_theta = getattr(model.config, "rope_theta", None)
    if got_theta is None:
        got_theta = (getattr(model.config, "rope_parameters", None) or {}).get("rope_theta")
    info["rope_theta"] = got_theta
    if want_theta is not None and got_theta is not None and float(want_theta) != float(got_theta):
        raise SystemExit(f"rope_theta mismatch after loading: {got_theta} != {want_theta}")
    info["padding_side"] = tok.padding_side
    info["pad_token_id"] = tok.pad_token_id
    info["n_layers"] = int(model.config.num_hidden_layers)
    info["torch_threads"] = torch.get_num_threads()
    return model, tok, info


def batches_of(texts: list[str], n: int) -> list[list[str]]:
    return [texts[i : i + n] for i in range(0, len(texts), n)]


def plain_forward_fn(model: Any, tok: Any, pos: list[str], neg: list[str], bs: int) -> Any:
    """A plain forward over the same batches the peer makes (tokenizer's own padding)."""
    import torch

    encs = [tok(b, return_tensors="pt", padding=True)
            for s in (pos, neg) for b in batches_of(s, bs)]

    def fn() -> None:
        with torch.no_grad():
            for e in encs:
                model(**e)

    return fn


def token_ids(tok: Any, texts: list[str]) -> list[list[int]]:
    return [list(tok(t)["input_ids"]) for t in texts]


def write_result(out: Path, result: dict[str, Any]) -> None:
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(f"worker wrote {out / 'result.json'}", flush=True)


def env_quiet() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def now() -> float:
    return time.perf_counter()
