"""Speed of a sweep grid: per-row batching against plain ``generate`` and against one cell at a
time, on the same prompts, in one process.

Grid (the sweep issue): 10 layers x 6 coefficients = 60 cells, 16 prompts, 32 new tokens,
greedy, smollm2-135m. Each cell is a steering vector (the sentiment behaviour's mean-difference
direction scaled to ``coeff x`` the layer's median residual norm).

* ``plain``: ``steerlab.generate`` (HF ``model.generate``) on the same 960 rows, unsteered, in
  batches of ``--batch-rows``: the tokens/s a batched generator reaches here;
* ``rows``: the per-row engine producing the whole grid (one treatment per row);
* ``sequential``: each cell alone, ``with Steer(...)`` around ``generate`` on its 16 prompts
  (what a loop over cells does);
* the same for ``--positions generated`` (steering only generated tokens), where the engine
  also shares each prompt's unsteered forward across cells, against the sequential loop with
  ``Steer(positions="generated")``.

Targets: rows tokens/s >= 0.7 x plain; rows >= 4x faster than sequential. Also checked: the
batched per-row logits equal one-cell-at-a-time logits (max |diff| < 1e-4, float32).

    .venv/bin/python benchmarks/bench_sweep.py [--quick] [--json P] [--seq-cells N]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, parser, print_table, r3, set_threads, time_with_load, verdict


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch-rows", type=int, default=128)
    p.add_argument(
        "--seq-cells",
        type=int,
        default=0,
        help="time the sequential loop on this many cells spread over the grid and scale to "
        "all of them (0: every cell)",
    )
    args = p.parse_args()
    set_threads(args.threads)

    import torch

    from steerlab import load_model
    from steerlab.behaviors.behavior import load_behavior
    from steerlab.directions.extract import extract
    from steerlab.engines.rows import greedy_rows, next_logprobs_rows
    from steerlab.evaluate.norms import residual_norms
    from steerlab.generation import generate
    from steerlab.interventions import Steer, apply
    from steerlab.sweep.grid import Cell

    lm = load_model(args.model)
    beh = load_behavior("builtin:sentiment")
    n_layers = lm.info.n_layers
    layers = [round(n_layers * (0.1 + 0.8 * i / 9)) for i in range(10)]
    coeffs = [0.0625, 0.125, 0.25, 0.5, 1.0, 2.0]
    prompts = beh.prompts("selection")[:16]
    new = 32
    if args.quick:
        layers, coeffs, prompts, new = layers[::5], coeffs[::3], prompts[:4], 8
    pos, neg, chat, _ = beh.contrast(lm.tokenizer)
    d = extract(lm, pos, neg, layers=layers, chat=chat)
    units = {lay: d.vector(lay) / d.vector(lay).norm() for lay in layers}
    norms = residual_norms(lm, prompts, layers)
    results: dict[str, object] = {
        "machine": machine(),
        "model": args.model,
        "grid": {"layers": layers, "coeffs": coeffs, "prompts": len(prompts), "new_tokens": new},
    }

    # equivalence: batched per-row logits vs each cell alone
    cells = [Cell(lay, c, "all") for lay in layers for c in coeffs]
    probe = cells[:: max(1, len(cells) // 6)]
    texts = [q for _ in probe for q in prompts[:4]]
    rows = [c.setting(units, norms) for c in probe for _ in prompts[:4]]
    together = next_logprobs_rows(lm, texts, rows, batch_rows=len(rows))
    worst = 0.0
    for j, c in enumerate(probe):
        with apply(lm, Steer(units[c.layer] * (c.coeff * norms[c.layer]), layers=c.layer)) as t:
            alone = next_logprobs_rows(t, prompts[:4])
        worst = max(worst, float((together[j * 4 : (j + 1) * 4] - alone).abs().max()))
    results["max_abs_logprob_diff"] = worst

    table = []

    def one(positions: str) -> None:
        cells = [Cell(lay, c, positions) for lay in layers for c in coeffs]
        texts = [q for _ in cells for q in prompts]
        settings = [c.setting(units, norms) for c in cells for _ in prompts]
        out: dict[str, float] = {}

        def plain() -> None:
            out["plain_tokens"] = float(
                sum(
                    len(lm.tokenizer.encode(t, add_special_tokens=False))
                    for t in generate(
                        lm.model,
                        lm.tokenizer,
                        texts,
                        max_new_tokens=new,
                        batch_size=args.batch_rows,
                    )
                )
            )

        def ours() -> None:
            g = greedy_rows(lm, texts, settings, max_new_tokens=new, batch_rows=args.batch_rows)
            out["rows_tokens"] = float(
                sum(len(lm.tokenizer.encode(t, add_special_tokens=False)) for t in g.texts)
            )

        picked = cells
        if args.seq_cells and args.seq_cells < len(cells):
            step = len(cells) / args.seq_cells
            picked = [cells[int(i * step)] for i in range(args.seq_cells)]

        def sequential() -> None:
            n = 0
            for c in picked:
                v = units[c.layer] * (c.coeff * norms[c.layer])
                with apply(lm, Steer(v, layers=c.layer, positions=positions)) as t:
                    outs = generate(
                        t.model, t.tokenizer, prompts, max_new_tokens=new, batch_size=len(prompts)
                    )
                n += sum(len(lm.tokenizer.encode(o, add_special_tokens=False)) for o in outs)
            out["seq_tokens"] = float(n)

        with torch.inference_mode():
            t_rows, load_r = time_with_load(ours)
            t_plain, load_p = time_with_load(plain) if positions == "all" else (None, 0.0)
            t_seq, load_s = time_with_load(sequential)
        t_seq_all = t_seq * len(cells) / len(picked)
        rec = {
            "rows_s": r3(t_rows),
            "rows_tokens": out["rows_tokens"],
            "rows_tok_per_s": r3(out["rows_tokens"] / t_rows),
            "sequential_s": r3(t_seq_all),
            "sequential_cells_timed": len(picked),
            "speedup_vs_sequential": r3(t_seq_all / t_rows),
            "other_load_cores": r3(max(load_r, load_p, load_s)),
        }
        if t_plain is not None:
            rec["plain_s"] = r3(t_plain)
            rec["plain_tok_per_s"] = r3(out["plain_tokens"] / t_plain)
            rec["ratio_vs_plain"] = r3(rec["rows_tok_per_s"] / rec["plain_tok_per_s"])
        results[positions] = rec
        table.append(
            [
                positions,
                rec.get("plain_tok_per_s", "-"),
                rec["rows_tok_per_s"],
                rec.get("ratio_vs_plain", "-"),
                rec["sequential_s"],
                rec["rows_s"],
                rec["speedup_vs_sequential"],
            ]
        )

    for positions in ("all", "generated"):
        one(positions)
    ok_equal = worst < 1e-4
    ok_plain = results["all"]["ratio_vs_plain"] >= 0.7  # type: ignore[index]
    ok_seq = max(results[p]["speedup_vs_sequential"] for p in ("all", "generated")) >= 4  # type: ignore[index]
    results["targets"] = {
        "equal_logits": verdict(ok_equal),
        "vs_plain_0.7": verdict(ok_plain),
        "vs_sequential_4x": verdict(ok_seq),
    }
    print_table(
        f"sweep grid, {len(layers)}x{len(coeffs)} cells x {len(prompts)} prompts x {new} tokens",
        [
            "positions",
            "plain tok/s",
            "rows tok/s",
            "rows/plain",
            "sequential s",
            "rows s",
            "speedup",
        ],
        table,
    )
    print(f"max |logprob diff| batched vs alone: {worst:.2e}; targets: {results['targets']}")
    results["elapsed_note"] = time.strftime("%Y-%m-%d")
    emit(results, args.json)


if __name__ == "__main__":
    main()
