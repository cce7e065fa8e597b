"""Cost of `steerlab compare` per method, and the wall-time targets of the compare issue.

Targets: the default comparison of `builtin:sentiment` on smollm2-135m (all methods, N up to
32, 2 draws) under 30 minutes on 2 CPU cores; `--quick` under 8. Per method: the time spent
fitting (steering: its share of the one capture pass; prompting: building the prompt;
LoRA/DPO: training steps), choosing on the selection split, and scoring the test split,
summed over N and draws, read from the run's own records.

    .venv/bin/python benchmarks/bench_compare.py [--quick] [--model M] [--behavior B]
        [--out DIR] [--json P]

With ``--out`` an existing run directory is resumed (its journal); the wall time is then not a
measurement, and the verdict says so.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, parser, print_table, r3, set_threads, verdict


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--behavior", default="builtin:sentiment")
    p.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    args = p.parse_args()
    set_threads(args.threads)

    from steerlab import load_behavior, load_model
    from steerlab.compare import QUICK, CompareConfig, run_compare

    cfg = CompareConfig(**(QUICK if args.quick else {}))
    lm = load_model(args.model)
    beh = load_behavior(args.behavior)
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        t0 = time.perf_counter()
        rep = run_compare(lm, beh, cfg, out)
        wall = time.perf_counter() - t0
    resumed = bool(rep.timings["resumed_steps"])
    per: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in rep.runs:
        m = per[r["method"]]
        for k in ("fit_seconds", "train_seconds", "select_seconds", "eval_seconds"):
            m[k] += float(r.get(k) or 0.0)
        m["runs"] += 1
    limit = 8 * 60 if args.quick else 30 * 60
    compute = rep.timings["compute_seconds"]["total"]
    res = {
        "machine": machine(),
        "model": args.model,
        "behavior": beh.name,
        "preset": "quick" if args.quick else "default",
        "train_sizes": list(cfg.train_sizes),
        "draws": cfg.draws,
        "wall_s": r3(wall),
        "compute_s": r3(compute),
        "resumed": resumed,
        "limit_s": limit,
        "rows_generated": rep.cost["rows_generated"],
        "tokens_generated": rep.cost["tokens_generated"],
        "steps_s": rep.timings["seconds"],
        "per_method": {k: {kk: r3(vv) for kk, vv in v.items()} for k, v in per.items()},
        "summary": [r.to_dict() for r in rep.summary],
        "winners": [w.to_dict() for w in rep.winners],
        "target": verdict(compute <= limit) + (" (resumed: compute time)" if resumed else ""),
    }
    print_table(
        f"compare cost per method, {args.model}, {beh.name}, N {list(cfg.train_sizes)}, "
        f"{cfg.draws} draw(s)",
        ["method", "runs", "fit s", "select s", "test s"],
        [
            [
                m,
                int(v["runs"]),
                r3(v["fit_seconds"]),
                r3(v["select_seconds"]),
                r3(v["eval_seconds"]),
            ]
            for m, v in per.items()
        ],
    )
    print_table(
        "compare wall time",
        ["wall s", "compute s", "limit s", "target"],
        [[res["wall_s"], res["compute_s"], limit, res["target"]]],
    )
    emit(res, args.json)


if __name__ == "__main__":
    main()
