"""The Results page, rendered from the committed ``benchmarks/results/*.json`` at build time.

One section per file: its date (from the file, else the commit that last touched it), the
command that produced it, and its figures as tables. ``SOURCES`` says, per file, what it
measured, the command, and which renderer reads it; a file not listed there still appears,
with its scalar values (``render_generic``). When a file's keys are not the ones its renderer
knows, the section says so and falls back to the scalar view (and ``tests/test_docs.py``,
which renders every committed file, fails until the renderer is updated).

Run ``python docs/gen_results.py`` to print the page.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


class FormatChanged(Exception):
    """A result file lacks a key its renderer reads."""


def _get(d: Any, *keys: str | int) -> Any:
    for k in keys:
        try:
            d = d[k]
        except (KeyError, IndexError, TypeError):
            raise FormatChanged("/".join(str(k) for k in keys)) from None
    return d


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
            return f"{x:.2e}"
        return f"{x:.{digits}f}"
    return str(x).replace("|", "\\|").replace("\n", " ")


def _ci(value: Any, ci: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if not ci:
        return _num(value, digits)
    return f"{_num(value, digits)} [{_num(ci[0], digits)}–{_num(ci[1], digits)}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_compare(d: dict) -> str:
    """``bench_compare.py``: test score per method and training-set size N."""
    summary = _get(d, "summary")
    sizes = sorted({_get(row, "n") for row in summary})
    methods = list(dict.fromkeys(_get(row, "method") for row in summary))
    cell = {(row["method"], row["n"]): row for row in summary}
    big = sizes[-1]
    rows = []
    for m in methods:
        by_n = [cell.get((m, n)) for n in sizes]
        last = cell.get((m, big)) or {}
        rows.append(
            [f"`{m}`"]
            + [_ci(r["score"], r.get("ci")) if r else "—" for r in by_n]
            + [_num(last.get("ce"), 2), _num(last.get("fit_seconds"), 1)]
        )
    header = ["method"] + [f"N = {n}" for n in sizes] + [f"CE at N = {big}", f"fit s at N = {big}"]
    winners = []
    for w in _get(d, "winners"):
        how = "separated from every other method" if w["separated"] else "not separated from "
        how += "" if w["separated"] else ", ".join(w.get("tied_with") or [])
        winners.append(f"N = {w['n']}: `{w['method']}` ({how})")
    meta = (
        f"{_get(d, 'model')}, behaviour `{_get(d, 'behavior')}`, preset `{_get(d, 'preset')}`, "
        f"{_get(d, 'draws')} draw(s); wall time {_num(_get(d, 'wall_s'), 0)} s; "
        f"target: {_num(d.get('target'))}. Test score, mean [95% interval]."
    )
    return "\n\n".join([meta, _table(header, rows), "Highest mean per N: " + "; ".join(winners)])


def render_refusal(d: dict) -> str:
    """A refusal run's ``report.json``: the selected direction and every variant's rates."""
    sel = _get(d, "selected")
    filt = _get(d, "filter")
    out = [
        f"{_get(d, 'model')}: layer {sel['layer']}, position {sel['position']}, "
        f"coefficient {_num(sel.get('coeff'))}; bypass {_num(sel['bypass_score'])}, "
        f"induce {_num(sel['induce_score'])}, val KL {_num(sel['kl_score'])}. "
        f"Refusal filter kept {filt['harmful_kept']}/{filt['harmful_total']} harmful and "
        f"{filt['harmless_kept']}/{filt['harmless_total']} harmless train prompts."
    ]
    rows = []
    for name, v in _get(d, "variants").items():
        rows.append(
            [
                f"`{name}`",
                _ci(v.get("harmful_refusal_rate"), v.get("harmful_refusal_ci")),
                _ci(v.get("harmless_refusal_rate"), v.get("harmless_refusal_ci")),
                _num(v.get("kl_harmless")),
                _num(v.get("harmful_n") or v.get("harmless_n")),
            ]
        )
    header = ["variant", "harmful refused", "harmless refused", "KL (harmless)", "n per set"]
    out.append(_table(header, rows))
    check = (d.get("export") or {}).get("check")
    if check:
        out.append(
            f"Export check against runtime ablation: max relative logit difference "
            f"{_num(check['max_rel_diff'])} (tolerance {_num(check['tolerance_rel'])}, "
            f"{check['dtype']}; ablation itself moves logits by "
            f"{_num(check['ablation_effect_rel'])} of their scale); "
            f"passed: {_num(check['passed'])}."
        )
    for note in d.get("notes") or []:
        out.append(f"Note from the run: {note}")
    return "\n\n".join(out)


def render_engines(d: dict) -> str:
    """The refusal pipeline on both engines."""
    rows = []
    for name, e in _get(d, "engines").items():
        gen = _get(e, "evaluation_generation")
        rows.append(
            [
                name,
                f"layer {_get(e, 'selected', 'layer')}, coeff {_num(_get(e, 'selected', 'coeff'))}",
                _num(gen.get("tokens_per_s"), 1),
                _num(_get(e, "timings", "evaluation"), 0),
                _num(_get(e, "timings", "total"), 0),
            ]
        )
    header = ["engine", "selected", "generation tokens/s", "evaluation s", "total s"]
    return "\n\n".join(
        [
            _table(header, rows),
            f"Generation speedup {_num(_get(d, 'generation_speedup'), 2)}x; refusal intervals "
            f"overlap: {_num(_get(d, 'refusal_intervals_overlap'))}. Target: "
            f"{_num(d.get('target'))}; verdict: {_num(d.get('verdict'))}.",
        ]
    )


def render_heretic(d: dict) -> str:
    """``bench_heretic.py``: steerlab's export against heretic on the same prompts."""
    rows = []
    for name, r in _get(d, "results").items():
        rows.append(
            [
                name,
                f"{_get(r, 'harmful_refusals')}/{_get(r, 'n_harmful')}",
                _num(r.get("kl_harmless", r.get("kl")), 3),
            ]
        )
    trials = _get(d, "heretic", "trials_completed")
    return "\n\n".join(
        [
            _table(["model", "harmful prompts refused", "KL (harmless)"], rows),
            f"heretic: {trials} trials, {_num(_get(d, 'heretic', 'worker_wall_s'), 0)} s; "
            f"steerlab fit {_num(_get(d, 'steerlab', 'fit_s'), 0)} s.",
        ]
    )


def render_organism(d: dict) -> str:
    """``bench_organism.py``: does ``discover`` find the planted backdoor without the trigger?"""
    org = _get(d, "organism")
    picked = _get(d, "picked", "heldout")
    held = _get(d, "heldout")
    disc = _get(d, "discover")
    rows = [
        ["organism, with trigger", _ci(org["with_trigger"]["rate"], org["with_trigger"]["ci"])],
        [
            "organism, without trigger",
            _ci(org["without_trigger"]["rate"], org["without_trigger"]["ci"]),
        ],
        ["best learned vector, no trigger", _ci(picked["rate"], picked["ci"])],
        [f"{held['n_random']} random (vector, sign) pairs, mean", _num(held["random_mean"])],
        ["the best random pair", _num(held["random_max"])],
    ]
    return "\n\n".join(
        [
            f"{_get(d, 'model')}; radius {_num(disc['radius'], 1)} ({disc['radius_mode']}), "
            f"source layer {disc['source_layer']}, target layer {disc['target_layer']}, "
            f"{disc['num_vectors']} vectors; held-out prompts: {picked['n']}.",
            _table(["backdoor fires on held-out prompts", "rate [95% interval]"], rows),
        ]
    )


def _leaves(d: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            if k in ("machine", "examples", "load") and depth == 0:
                continue
            out += _leaves(v, f"{prefix}{k}" if not prefix else f"{prefix} / {k}", depth + 1)
    elif isinstance(d, list):
        if all(isinstance(x, (int, float, str, bool)) or x is None for x in d) and len(d) <= 8:
            out.append((prefix, ", ".join(_num(x) for x in d)))
    elif depth <= 4:
        out.append((prefix, d))
    return out


def render_generic(d: dict) -> str:
    """Every scalar of the file (machine details left out), one row each."""
    rows = [[f"`{k}`", _num(v)] for k, v in _leaves(d)[:80]]
    return _table(["key", "value"], rows)


def _recorded_compare(d: dict) -> str:
    """A ``compare.json`` kept by ``benchmarks/record.py``: the table with its marks, the
    winners from the paired contrasts, the significant contrasts and the random null."""
    summary = _get(d, "summary")
    sizes = _get(d, "train_sizes")
    cell = {(row["method"], row["n"]): row for row in summary}
    big = sizes[-1]
    rows = []
    for m in _get(d, "methods"):
        marks = []
        for n in sizes:
            r = cell.get((m, n))
            if r is None:
                marks.append("—")
                continue
            text = _ci(r["score"], r["ci"])
            text += "" if _get(r, "within_bound") else " †"
            text += " ‡" if _get(r, "degenerate") else ""
            if r.get("rate") is not None:
                text += f" ({100 * r['rate']:.0f}% > {r['rate_threshold']:g})"
            marks.append(text)
        last = cell.get((m, big)) or {}
        budget = last.get("budget") or {}
        rows.append([f"`{m}`", *marks, _num(last.get("ce"), 2), _num(budget.get("candidates"))])
    header = ["method", *[f"N = {n}" for n in sizes], f"CE at N = {big}", "candidates"]
    win = []
    for w in _get(d, "winners"):
        who = f"`{w['method']}`" if w["method"] else "no winner"
        win.append(f"N = {w['n']} ({w['view']}): {who}")
    sig = [
        [c["kind"], _num(c["n"]), f"`{c['a']}` − `{c['b']}`", _ci(c["diff"], c["ci"]),
         _num(c["p_holm"], 4)]
        for c in _get(d, "contrasts")
        if c["p_holm"] is not None and c["p_holm"] < 0.05
    ]  # fmt: skip
    null = d.get("random_null") or {}
    parts = [
        f"Model `{_get(d, 'model', 'model_id')}`, behaviour `{_get(d, 'behavior', 'name')}`, "
        f"{_get(d, 'config', 'draws')} draw(s), layers {_get(d, 'layers')}. Test score, mean "
        "[95% interval] (share of completions above the threshold). † over the fluency bound on "
        "selection; ‡ degenerate (one reply for every prompt).",
        _table(header, rows),
        "Winners (from the paired contrasts, Holm-corrected): " + "; ".join(win),
    ]
    if sig:
        head = ["contrast", "N", "a − b", "difference [95% CI]", "p (Holm)"]
        parts += ["Contrasts with Holm p < 0.05:", _table(head, sig)]
    else:
        parts.append("No contrast has Holm p < 0.05.")
    if null:
        pct = ", ".join(f"`{k}` {v:.0f}%" for k, v in sorted(null["percentile"].items()))
        parts.append(
            f"Random null: {null['n_directions']} norm-matched directions at layer "
            f"{null['cell']['layer']}, {null['cell']['coeff']:g} x norm (N = {null['n']}) score "
            f"{_ci(sum(null['scores']) / len(null['scores']), null['ci'])}; percentile of each "
            f"method there: {pct}."
        )
    return "\n\n".join(parts)


def _recorded_sweep(d: dict) -> str:
    """A ``sweep.json`` kept by ``benchmarks/record.py``: the chosen cell and the test split."""
    ch, test = _get(d, "chosen"), _get(d, "test")
    rows = [
        [name, _ci(test[name]["score"], test[name]["ci"]), _num(test[name]["ce"], 2)]
        for name in ("steered", "unsteered", "random")
    ]
    paired = [
        [k, _ci(c["diff"], c["ci"]), _num(c["p"], 4), _num(c["p_holm"], 4)]
        for k, c in _get(test, "paired").items()
    ]
    null = test["random"]
    return "\n\n".join(
        [
            f"Model `{_get(d, 'model', 'model_id')}`, behaviour `{_get(d, 'behavior', 'name')}`. "
            f"Chosen on selection: layer {ch['layer']}, {ch['coeff']:g} x norm "
            f"({ch['positions']}), within the bound: {_num(ch['within_bound'])}.",
            _table(["test split", "score [95% CI]", "CE"], rows),
            f"Random row: the mean of {null['n_directions']} directions, interval their central "
            f"95%; the chosen direction is above {null['percentile']:.0f}% of them "
            f"(prediction test p = {_num(null['p_direction'], 4)}).",
            _table(["paired contrast", "difference [95% CI]", "p", "p (Holm)"], paired),
            f"Verdict: {_get(d, 'verdict', 'text')}",
        ]
    )


def render_recorded(d: dict) -> str:
    """A file written by ``benchmarks/record.py`` (its command, commit and model fingerprint
    recorded with the result)."""
    result = _get(d, "result")
    prov = d.get("provenance") or {}
    head = (
        f"Commit `{str(d.get('git_commit'))[:10]}`"
        + (" (with uncommitted changes)" if d.get("git_dirty") else "")
        + f", steerlab {d.get('steerlab_version')}, weights fingerprint "
        f"`{str(prov.get('weights'))[:16]}`, wall time {_num(d.get('wall_seconds'), 0)} s."
    )
    kind = _get(d, "source_file")
    body = {"compare.json": _recorded_compare, "sweep.json": _recorded_sweep}.get(kind)
    return head + "\n\n" + (body(result) if body else render_generic(result))


# file -> (what it measured, the command that wrote it, renderer). The command is the one the
# benchmark's README gives; a file that records its own ``command`` shows that instead.
SOURCES: dict[str, tuple[str, str, Callable[[dict], str]]] = {
    "refusal_quick_issue23.json": (
        "The refusal direction, quick preset (the README's first command)",
        "bash scripts/demo.sh   # steerlab refusal --quick --export ...",
        render_refusal,
    ),
    "refusal_engines_bf16.json": (
        "The refusal pipeline on the Hugging Face and vLLM engines (bfloat16)",
        "steerlab refusal --dtype bfloat16 [--engine vllm]",
        render_engines,
    ),
    "heretic.json": (
        "Abliteration against heretic-llm 1.4.0 (16 trials), JailbreakBench + Alpaca",
        "python benchmarks/bench_heretic.py --trials 16 "
        + "--steerlab-export runs/refusal-default/abliterated "
        + "--steerlab-report runs/refusal-default/report.json",
        render_heretic,
    ),
    "heretic_48.json": (
        "Abliteration against heretic-llm 1.4.0 (48 trials)",
        "python benchmarks/bench_heretic.py --trials 48 "
        + "--steerlab-export runs/refusal-default/abliterated "
        + "--steerlab-report runs/refusal-default/report.json",
        render_heretic,
    ),
    "organism_auto.json": (
        "MELBO finds the planted backdoor (radius auto)",
        "python benchmarks/bench_organism.py --radius auto",
        render_organism,
    ),
    "organism_r30.json": (
        "MELBO finds the planted backdoor (radius fixed at 30)",
        "python benchmarks/bench_organism.py --radius 30",
        render_organism,
    ),
    "compare_default.json": (
        "Steering against prompting and finetuning: sentiment, default preset",
        "python benchmarks/bench_compare.py   # smollm2-135m, builtin:sentiment",
        render_compare,
    ),
    "compare_french_default.json": (
        "Steering against prompting and finetuning: French, default preset",
        "python benchmarks/bench_compare.py --behavior builtin:french",
        render_compare,
    ),
    "compare_quick.json": (
        "Steering against prompting and finetuning: sentiment, quick preset",
        "python benchmarks/bench_compare.py --quick",
        render_compare,
    ),
    "compare_qwen_quick.json": (
        "Steering against prompting and finetuning: qwen2.5-coder-0.5b, quick preset",
        "python benchmarks/bench_compare.py --quick --model qwen2.5-coder-0.5b",
        render_compare,
    ),
}


# What a reader must know about a file that the file does not say (keep these short and dated).
_CE_FIX = (
    "The CE of `lora`, `dpo` and `lora+mean_diff` in this file was measured before a fix (noted "
    "2026-12-01): it was scored under the adapted model, and their checkpoint and stacked "
    "strength were chosen with that CE. Those rows are to be measured again."
)
NOTES: dict[str, str] = {
    "compare_default.json": _CE_FIX,
    "compare_french_default.json": _CE_FIX,
}


def _date(d: dict, path: Path) -> str:
    date = d.get("date") or (d.get("machine") or {}).get("date")
    if date:
        return str(date)
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%cs", "--", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out = ""
    return f"not recorded in the file; committed {out}" if out else "not recorded in the file"


def render_file(path: Path) -> tuple[str, bool]:
    """One file's section, and whether its renderer read it (False: the scalar fallback)."""
    d = json.loads(path.read_text())
    fallback = render_recorded if "source_file" in d else render_generic
    title, command, render = SOURCES.get(
        path.name, (path.stem.replace("_", " "), "see benchmarks/README.md", fallback)
    )
    command = d.get("command") or command
    head = [
        f"### {title}",
        f"`benchmarks/results/{path.name}` · date: {_date(d, path)}",
        f"```bash\n{command}\n```",
    ]
    try:
        body, ok = render(d), True
    except FormatChanged as e:
        body = (
            f'!!! warning "This file\'s format changed"\n    The renderer for it '
            f"(`docs/gen_results.py`) did not find `{e}`; its scalar values follow.\n\n"
            + render_generic(d)
        )
        ok = False
    if path.name in NOTES:
        body += f"\n\n!!! note\n    {NOTES[path.name]}"
    return "\n\n".join([*head, body]), ok


def _is_recorded(path: Path) -> bool:
    try:
        return "source_file" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


def page() -> str:
    """The whole Results page (Markdown)."""
    files = sorted(RESULTS.glob("*.json"))
    recorded = [p for p in files if p.name not in SOURCES and _is_recorded(p)]
    known = [p for name in SOURCES for p in files if p.name == name] + recorded
    others = [p for p in files if p.name not in SOURCES and p not in recorded]
    parts = [
        "# Measured results",
        "This page is generated at build time from the JSON files committed in "
        "`benchmarks/results/` (by `docs/gen_results.py`): rerun a benchmark, commit its "
        "file, rebuild, and the page follows. Nothing here is typed by hand. Machine: the "
        "2-core CPU machine each file names unless it says otherwise.",
        "Figures quoted in earlier READMEs that have no committed result file yet are on "
        "[As reported before](reported-before.md), marked as such.",
        "## Quality",
    ]
    parts += [render_file(p)[0] for p in known]
    parts.append("## Speed and cost benchmarks")
    parts.append(
        "Files without a dedicated renderer: every scalar they hold, as written by the "
        "benchmark (see `benchmarks/README.md` for what each measures)."
    )
    parts += [render_file(p)[0] for p in others]
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    print(page())
