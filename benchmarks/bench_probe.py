"""Cost of a full probe against one capture pass, in one process.

Target (probe issue): the full probe (all layers, 4 methods, controls, erasure, 20 draws x 6
training sizes) on qwen2.5-coder-0.5b with 256 + 256 prompts costs at most 1.5x one capture
pass over the same prompts plus the scikit-learn time, measured separately:

    probe wall time <= 1.5 x capture pass + fitting time

where ``capture pass`` is ``capture_stats`` over the 512 prompts at every layer (keeping the
samples), timed alone, and ``fitting time`` is the probe's own fitting steps (``probes`` and
``sample efficiency`` in its timings). Peak RSS is reported (``VmHWM``).

    .venv/bin/python benchmarks/bench_probe.py [--quick] [--json P]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, parser, print_table, r3, set_threads, verdict


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen2.5-coder-0.5b")
    p.add_argument("--n", type=int, default=256, help="prompts per class")
    args = p.parse_args()
    set_threads(args.threads)

    import torch

    from steerlab import load_model, read_prompts
    from steerlab.capture import capture_stats
    from steerlab.probe import ProbeConfig, make_probe_data, run_probe

    n, draws, model = args.n, 20, args.model
    if args.quick:
        n, draws, model = 32, 2, "smollm2-135m"
    lm = load_model(model)
    pos = read_prompts("builtin:harmful")[:n]
    neg = read_prompts("builtin:harmless")[:n]
    layers = list(range(lm.info.n_layers))
    rss0 = _hwm_mb()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for texts in (pos, neg):
            capture_stats(lm.model, lm.tokenizer, lm.adapter, texts, layers, keep_samples=True)
    t_capture = time.perf_counter() - t0
    data = make_probe_data(pos, neg, seed=0)
    # The 6 sizes; the quick run has too few prompts for 32 and 64.
    sizes: tuple[int | str, ...] = ("auto",) if args.quick else (4, 8, 16, 32, 64, "all")
    cfg = ProbeConfig(
        methods=("mean_diff", "pca", "logistic", "leace"), draws=draws, train_sizes=sizes
    )
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as out:
        t0 = time.perf_counter()
        rep = run_probe(lm, data, cfg, out).to_dict()
        t_probe = time.perf_counter() - t0
    secs = rep["timings"]["seconds"]
    t_fit = secs.get("probes", 0.0) + secs.get("sample efficiency", 0.0)
    budget = 1.5 * t_capture + t_fit
    ok = t_probe <= budget
    res = {
        "machine": machine(),
        "model": model,
        "prompts_per_class": n,
        "layers": len(layers),
        "capture_pass_s": r3(t_capture),
        "probe_s": r3(t_probe),
        "probe_steps_s": secs,
        "fitting_s": r3(t_fit),
        "probe_minus_fitting_over_capture": r3((t_probe - t_fit) / t_capture),
        "budget_s": r3(budget),
        "peak_rss_mb": r3(_hwm_mb()),
        "rss_before_mb": r3(rss0),
        "target": verdict(ok),
    }
    print_table(
        f"probe cost, {model}, {n}+{n} prompts, {len(layers)} layers, 4 methods, {draws} draws",
        [
            "capture pass s",
            "probe s",
            "fitting s",
            "(probe - fitting) / capture",
            "budget s",
            "peak RSS MB",
            "target",
        ],
        [
            [
                res["capture_pass_s"],
                res["probe_s"],
                res["fitting_s"],
                res["probe_minus_fitting_over_capture"],
                res["budget_s"],
                res["peak_rss_mb"],
                res["target"],
            ]
        ],
    )
    emit(res, args.json)


if __name__ == "__main__":
    main()
