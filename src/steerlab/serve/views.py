"""What the playground reads: a text's projection per token, and the runs with reports."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from ..models.load import LoadedModel

__all__ = ["projections", "run_list"]


def projections(lm: LoadedModel, text: str, layer: int, unit: Any, chat: bool) -> dict:
    """Per-token projection of ``resid_pre[layer]`` on ``unit`` (steerlab's capture)."""
    import torch

    from ..capture import read_activations
    from ..models.chat import encode

    batch = encode(lm.tokenizer, [text], chat=chat)
    ids = batch.input_ids[0].tolist()
    pos = tuple(range(-len(ids), 0))
    acts = read_activations(lm.model, lm.adapter, batch, [layer], positions=pos)
    h = torch.stack([acts[(layer, p)][0] for p in pos])  # (T, D)
    proj = (h.float().cpu() @ unit.float()).tolist()
    tokens = [lm.tokenizer.decode([i]) for i in ids]
    return {"tokens": tokens, "projections": proj, "layer": layer}


def run_list(root: Path, depth: int = 4) -> list[dict[str, Any]]:
    """Directories under ``root`` holding a report.html or report.json, with their kind."""
    from ..runs import made_by_steerlab

    out: list[dict[str, Any]] = []
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and d != "cache" and len(rel.parts) < depth
        )
        reports = [f for f in ("report.html", "report.json") if f in filenames]
        if not reports or here == root:
            continue
        rec = made_by_steerlab(here) or {}
        kind = rec.get("kind")
        if kind is None and "report.json" in reports:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                kind = json.loads((here / "report.json").read_text()).get("kind")
        out.append(
            {
                "path": rel.as_posix(),
                "kind": kind,
                "reports": reports,
                "modified": (here / reports[0]).stat().st_mtime,
            }
        )
    return out
