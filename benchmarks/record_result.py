"""Write an auditable result file under ``benchmarks/results/`` from a finished run directory.

The file holds what a reader needs to check a README figure: the exact command, the steerlab
version and git commit (and whether the tree was dirty), the model's identity and weights hash,
the choices made (configuration, split, chosen layers), the run's own JSON, and the per-prompt
scores with the prompt texts cut to 80 characters.

    python benchmarks/record_result.py probe RUN_DIR --name NAME --command "steerlab probe ..." \\
        -p builtin:harmful -n builtin:harmless

``benchmarks/reproduce.sh NAME`` runs the command and then this script.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CUT = 80  # characters of each prompt kept


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def model_identity(model: dict[str, Any]) -> dict[str, Any]:
    """The run's model fields, plus the cached built-in model's source and weights hash."""
    from steerlab.models.registry import cache_dir

    out = dict(model)
    d = cache_dir() / "models" / str(model.get("model_id", ""))
    if (d / "steerlab_source.json").is_file():
        out["source"] = json.loads((d / "steerlab_source.json").read_text())
    weights = sorted(d.glob("*.safetensors")) if d.is_dir() else []
    out["weights_sha256"] = {w.name: _sha256(w) for w in weights}
    return out


def provenance(command: str, model: dict[str, Any], commit: str | None) -> dict[str, Any]:
    from steerlab import __version__

    return {
        "command": command,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "steerlab_version": __version__,
        "commit": commit or _git("rev-parse", "HEAD"),
        "head_when_recorded": _git("rev-parse", "HEAD"),
        "dirty_when_recorded": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "model": model_identity(model),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
        },
    }


def check_overwrite(out: Path, name: str) -> None:
    """Refuse to replace a result file this recorder did not write under the same name (e.g.
    a benchmark's own JSON)."""
    if out.exists():
        try:
            old = json.loads(out.read_text())
        except ValueError:
            old = None
        if not isinstance(old, dict) or old.get("name") != name:
            raise SystemExit(f"{out} exists and was not recorded as {name!r}: pick another name")


def _cut(text: str) -> str:
    return text if len(text) <= CUT else text[: CUT - 1] + "…"


def _span(rows: list[dict[str, Any]]) -> list[float]:
    accs = [r["accuracy"] for r in rows if r.get("accuracy") is not None]
    return [min(accs), max(accs)] if accs else []


def probe_summary(rep: dict[str, Any]) -> dict[str, Any]:
    """The figures the README quotes, picked from probe.json (nothing recomputed): each
    method at its chosen layer with the nulls there, the nulls' highest per-layer mean, the
    cosines at mean_diff's chosen layer, and the erasure ranges over layers."""
    layers, ctl = rep["layers"], rep["controls"]
    methods = {}
    for m, b in rep["best"].items():
        i = layers.index(b["layer"])
        s = rep["methods"][m][i]
        methods[m] = {
            "layer": b["layer"],
            "accuracy": s["accuracy"],
            "accuracy_ci": s["accuracy_ci"],
            "auroc": s["auroc"],
            "validation_accuracy": rep["validation_accuracy"][m][i],
        } | {
            key: {k: ctl[key][i].get(k) for k in ("accuracy", "accuracy_sd", "accuracy_ci")}
            | {"percentile": ctl[key][i]["percentile"][m], "p_value": ctl[key][i]["p_value"][m]}
            for key in ("shuffled", "random")
        }
    top = {
        key: max(
            ({"layer": lay, "accuracy": r["accuracy"], "accuracy_ci": r["accuracy_ci"]}
             for lay, r in zip(layers, ctl[key], strict=True)),
            key=lambda x: x["accuracy"],
        )
        for key in ("shuffled", "random")
    }  # fmt: skip
    ag = rep["agreement"]
    names, ref = ag["methods"], ag["reference"]
    i = layers.index(rep["best"][ref]["layer"])
    cos = dict(zip(names, ag["cosine"][i][names.index(ref)], strict=True))
    ero = rep["erasure"]
    return {
        "methods": methods,
        "nulls_highest_layer_mean": top,
        "n_permutations": ctl["n_permutations"],
        "n_random_directions": ctl["n_random_directions"],
        "cosine_to_reference": {"reference": ref, "layer": layers[i], "cosine": cos},
        "cosine_leace_lda": (
            ag["cosine"][i][names.index("leace")][names.index("lda")]
            if {"leace", "lda"} <= set(names)
            else None
        ),
        "erasure_accuracy_range_over_layers": {
            "in_sample_after_leace": _span(ero["after_leace"]),
            "held_out_before": _span(ero["held_out"]["before_erasure"]),
            "held_out_after_leace": _span(ero["held_out"]["after_leace"]),
            "held_out_after_mean_diff_ablation": _span(ero["held_out"]["after_mean_diff_ablation"]),
        },
    }


def probe_record(run: Path, args: argparse.Namespace) -> dict[str, Any]:
    """probe.json, with each method's per-prompt test scores at its best layer beside the
    (cut) prompts, in the order of the test sets."""
    from steerlab.probe import make_probe_data

    rep = json.loads((run / "probe.json").read_text())
    data = make_probe_data(
        args.positive, args.negative, test_fraction=args.test_fraction, seed=args.seed
    )
    per_prompt = {}
    for m, p in rep["projections"].items():
        thr = p["threshold"]
        rows = [
            {"label": 1, "text": _cut(t), "score": s, "correct": s > thr}
            for t, s in zip(data.test_pos, p["pos"], strict=True)
        ] + [
            {"label": 0, "text": _cut(t), "score": s, "correct": s <= thr}
            for t, s in zip(data.test_neg, p["neg"], strict=True)
        ]
        per_prompt[m] = {"layer": p["layer"], "threshold": thr, "rows": rows}
    return {
        "summary": probe_summary(rep),
        "choices": {
            "config": rep["config"],
            "split": rep["data"]["split"],
            "counts": rep["data"]["counts"],
            "best": rep["best"],
        },
        "per_prompt": per_prompt,
        "run": rep,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["probe"])
    p.add_argument("run", type=Path, help="the finished run directory")
    p.add_argument("--name", required=True, help="result name: benchmarks/results/NAME.json")
    p.add_argument("--command", required=True, help="the command that made the run")
    p.add_argument("--commit", help="the commit the run was made with (default: HEAD now)")
    p.add_argument("-p", "--positive")
    p.add_argument("-n", "--negative")
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    body = probe_record(args.run, args)
    rec = {"name": args.name, **provenance(args.command, body["run"]["model"], args.commit), **body}
    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    check_overwrite(out, args.name)
    out.write_text(json.dumps(rec, indent=1, allow_nan=False) + "\n")
    print(f"wrote {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
