"""Hugging Face generation speed of this tree against earlier commits, in one run.

Two workloads, each timed in a fresh process per commit, the commits taken in turn (A B C A B
C ...) so that drift in the machine's load hits every commit alike:

* **refusal evaluation**: ``generate`` with the prefix cache (what the refusal evaluation
  runs), ``max_new_tokens`` greedy tokens per prompt, under directional ablation (hooks on
  every block input and sublayer write) on ``qwen2.5-coder-0.5b``;
* **per-row engine**: the sweep's decode loop (``greedy_rows``), 4 steering settings x 8
  prompts in one batch, on ``smollm2-135m``.

Each commit's ``src/`` is exported with ``git archive`` into a temporary directory and put
first on ``PYTHONPATH``; the same virtual environment (torch, transformers) serves all, so a
difference is the code's. Tokens are counted from the decoded texts (re-tokenized).

Run: ``python benchmarks/bench_commits.py [--commits 25ea1ef,8096d4f,WORKTREE] [--rounds 3]
[--json out.json]``
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, emit, machine, parser, r3

WORKER = r'''
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[2]))
kind = sys.argv[1]
from steerlab.models.load import load_model
from steerlab.io.prompts import read_prompts
def count(tok, texts):
    return sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
if kind == "refusal":
    import steerlab
    from steerlab.generation import generate
    lm = load_model("qwen2.5-coder-0.5b")
    prompts = read_prompts("builtin:harmful:test")[:16]
    g = torch.Generator().manual_seed(0)
    u = torch.randn(lm.info.d_model, generator=g)
    with steerlab.ablate(lm.model, u / u.norm()):
        generate(lm.model, lm.tokenizer, prompts[:2], max_new_tokens=4, prefix_cache=True)
        t0 = time.perf_counter()
        texts = generate(lm.model, lm.tokenizer, prompts, max_new_tokens=32, batch_size=8,
                         prefix_cache=True)
        dt = time.perf_counter() - t0
else:
    lm = load_model("smollm2-135m")
    try:
        from steerlab.engines.rows import greedy_rows
    except ImportError:  # before the one-evaluator change
        from steerlab.sweep.engine import greedy_rows
    try:
        from steerlab.interventions.per_row import RowSetting
        def row(v, lay):
            return RowSetting(add={lay: v})
    except ImportError:
        from steerlab.interventions import Steer
        def row(v, lay):
            return Steer(v, layers=lay)
    prompts = read_prompts("builtin:harmless:test")[:8]
    g = torch.Generator().manual_seed(0)
    rows = [row(torch.randn(lm.info.d_model, generator=g) * c, 12) for c in (0.5, 1.0, 2.0, 4.0)]
    texts_in = [p for _ in rows for p in prompts]
    rows_in = [r for r in rows for _ in prompts]
    greedy_rows(lm, texts_in[:8], rows_in[:8], max_new_tokens=2)
    t0 = time.perf_counter()
    out = greedy_rows(lm, texts_in, rows_in, max_new_tokens=24)
    dt = time.perf_counter() - t0
    texts = out.texts
print(json.dumps({"seconds": dt, "tokens": count(lm.tokenizer, texts), "texts": texts}))
'''


def _export(rev: str, into: Path) -> Path:
    """``src/`` of ``rev`` (``WORKTREE``: this checkout as it is) under ``into``."""
    if rev == "WORKTREE":
        return REPO / "src"
    dest = into / rev
    dest.mkdir(parents=True)
    arch = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=arch, check=True)
    return dest / "src"


def _once(src: Path, kind: str, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", WORKER, kind, str(threads)],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"worker failed ({kind}, {src}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--commits", default="25ea1ef,8096d4f,WORKTREE")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workloads", default="refusal,per_row")
    args = p.parse_args()
    revs = args.commits.split(",")
    kinds = args.workloads.split(",")
    threads = args.threads or os.cpu_count() or 1
    res: dict[str, dict[str, list[dict]]] = {k: {r: [] for r in revs} for k in kinds}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="steerlab-commits-") as tmp:
        srcs = {r: _export(r, Path(tmp)) for r in revs}
        for i in range(args.rounds):
            for kind in kinds:
                for r in revs:
                    got = _once(srcs[r], kind, threads)
                    res[kind][r].append(got)
                    tps = got["tokens"] / got["seconds"]
                    print(f"round {i + 1} {kind} {r}: {got['tokens']} tokens, {tps:.1f} tokens/s")
    rows = []
    out: dict = {"machine": machine(), "threads": threads, "rounds": args.rounds, "workloads": {}}
    for kind in kinds:
        base = revs[-1]
        tps = {
            r: statistics.median(x["tokens"] / x["seconds"] for x in res[kind][r]) for r in revs
        }
        same = {r: res[kind][r][0]["texts"] == res[kind][base][0]["texts"] for r in revs}
        out["workloads"][kind] = {
            r: {
                "tokens_per_s_median": r3(tps[r]),
                "tokens_per_s": [r3(x["tokens"] / x["seconds"]) for x in res[kind][r]],
                "tokens": res[kind][r][0]["tokens"],
                "same_texts_as_last": same[r],
                "ratio_last_over_this": r3(tps[base] / tps[r]),
            }
            for r in revs
        }
        for r in revs:
            rows.append([kind, r, f"{tps[r]:.1f}", f"{tps[base] / tps[r]:.3f}", str(same[r])])
    out["seconds"] = r3(time.perf_counter() - t_start)
    print("workload | commit | tokens/s (median) | last / this | same texts as last")
    for row in rows:
        print(" | ".join(row))
    emit(out, args.json)


if __name__ == "__main__":
    main()
