"""Helpers for self-contained HTML reports: escaping, number formats, tables, the page, figures.

Everything here is stdlib-only at import; matplotlib loads inside :func:`new_figure`. Text
reaches the page through :func:`esc` (``html.escape``); only strings wrapped in :class:`Raw`
(HTML built from escaped parts) pass through unchanged.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DASH",
    "Raw",
    "config_section",
    "contiguous_runs",
    "data_uri_png",
    "esc",
    "figure_html",
    "find_key",
    "flatten",
    "fmt_float",
    "fmt_pct",
    "fmt_rate",
    "fmt_value",
    "new_figure",
    "notes_section",
    "num_or_nan",
    "page",
    "png_bytes",
    "table",
    "timings_section",
]

DASH = "—"  # shown wherever a value is missing (None)


class Raw(str):
    """HTML that is already safe; :func:`esc` and :func:`table` leave it as it is."""


def esc(value: Any) -> str:
    """Escape ``value`` for HTML text or attribute context (quotes included)."""
    if isinstance(value, Raw):
        return str(value)
    return html.escape(str(value), quote=True)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def fmt_float(x: Any, digits: int = 3) -> str:
    """``digits`` decimals; tiny non-zero values in scientific form so they do not read as 0."""
    if x is None:
        return DASH
    if not _is_num(x):
        return str(x)
    x = float(x)
    if not math.isfinite(x):
        return str(x)  # 'nan', 'inf': a real value, not a missing one
    if 1e-9 <= abs(x) < 0.5 * 10.0**-digits:  # e.g. a KL of 4e-4; float noise stays 0.000
        return f"{x:.1e}"
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no '-0.000'


def fmt_pct(x: Any) -> str:
    """A fraction in [0, 1] as a percentage with one decimal."""
    if x is None:
        return DASH
    if not _is_num(x) or not math.isfinite(float(x)):
        return str(x)
    return f"{100.0 * float(x):.1f}%"


def _valid_ci(ci: Any) -> bool:
    return (
        isinstance(ci, Sequence)
        and not isinstance(ci, str)
        and len(ci) == 2
        and all(_is_num(v) for v in ci)
    )


def fmt_rate(rate: Any, ci: Any = None) -> str:
    """``'12.5% [8.1–17.9]'``: a rate with its confidence interval in percentage points."""
    if rate is None:
        return DASH
    text = fmt_pct(rate)
    if _valid_ci(ci):
        lo, hi = (100.0 * float(v) for v in ci)
        text += f" [{lo:.1f}–{hi:.1f}]"
    return text


def fmt_value(v: Any) -> str:
    """A config value: general float format (learning rates must not round to 0.000)."""
    if v is None:
        return DASH
    if isinstance(v, (bool, int)):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    return str(v)


def flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings as ``('outer.inner', value)`` pairs, in insertion order."""
    out: list[tuple[str, Any]] = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.extend(flatten(value, prefix=f"{name}."))
        else:
            out.append((name, value))
    return out


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    numeric: Iterable[int] = (),
    row_classes: Sequence[str] | None = None,
    table_class: str = "",
) -> str:
    """An HTML table; every cell is escaped unless it is :class:`Raw`.

    Args:
        headers: column titles.
        rows: cell values (converted with ``str`` then escaped).
        numeric: indices of columns to right-align.
        row_classes: optional CSS class per row ('' for none).
        table_class: CSS class of the ``<table>``.

    Returns:
        The table's HTML.
    """
    num = set(numeric)

    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="num"' if i in num else ""
        return f"<{tag}{cls}>{esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cls = row_classes[r] if row_classes is not None and r < len(row_classes) else ""
        attr = f' class="{esc(cls)}"' if cls else ""
        body.append(f"<tr{attr}>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>")
    tcls = f' class="{esc(table_class)}"' if table_class else ""
    return f"<table{tcls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def data_uri_png(data: bytes) -> str:
    """PNG bytes as a ``data:`` URI, so the page needs no files beside it."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_html(png: bytes, caption: str) -> str:
    """A ``<figure>`` with the PNG embedded inline and an escaped caption."""
    return (
        f'<figure><img src="{data_uri_png(png)}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def notes_section(notes: Any) -> str:
    """Caveats in a highlighted box; '' when there are none."""
    notes = [n for n in notes or [] if n]
    if not notes:
        return ""
    items = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return f'<section class="notes"><strong>Notes</strong><ul>{items}</ul></section>'


def timings_section(timings: Any) -> str:
    """Seconds per step, in the order given, with a total row; '' when empty."""
    if not isinstance(timings, Mapping) or not timings:
        return ""
    total = sum(float(t) for t in timings.values() if _is_num(t))
    rows = [[k, f"{float(t):.1f}" if _is_num(t) else fmt_value(t)] for k, t in timings.items()]
    rows.append([Raw("<strong>total</strong>"), Raw(f"<strong>{total:.1f}</strong>")])
    return "<h2>Timings</h2>" + table(["step", "seconds"], rows, numeric=(1,))


def config_section(config: Any) -> str:
    """Run options as an option/value table (nested keys dotted); '' when empty."""
    if not isinstance(config, Mapping) or not config:
        return ""
    rows = [[k, fmt_value(v)] for k, v in flatten(config)]
    return "<h2>Configuration</h2>" + table(["option", "value"], rows)


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A bare Figure on an Agg canvas: no pyplot, no global backend switch, nothing to close."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes, without a version stamp (same input, same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def num_or_nan(x: Any) -> float:
    """A score as a float, NaN where missing, so lines break instead of dropping to zero."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def find_key(d: Any, key: str) -> Any:
    """``d[key]``, searching nested mappings too (config may group options)."""
    if not isinstance(d, Mapping):
        return None
    if key in d:
        return d[key]
    for v in d.values():
        found = find_key(v, key)
        if found is not None:
            return found
    return None


def contiguous_runs(values: list[int]) -> list[tuple[int, int]]:
    """Sorted ints as contiguous (first, last) runs: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for v in sorted(set(values)):
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1200px; margin: 0 auto; padding: 1.5em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.8em; }
.summary { background: #f4f7fb; border-left: 4px solid #3b6ea8; padding: 0.6em 1em; }
.notes { background: #fff6db; border-left: 4px solid #d9a400; padding: 0.6em 1em; }
.muted { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; vertical-align: top; text-align: left; }
th { background: #eef1f5; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
tr.selected, tbody tr.selected:nth-child(even) { background: #fff2b3; font-weight: 600; }
table.completions { table-layout: fixed; width: 100%; font-size: 0.8em; }
table.completions td { white-space: pre-wrap; overflow-wrap: anywhere; }
table.completions th:first-child { width: 5.5em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
footer { margin-top: 2.5em; color: #777; font-size: 0.85em; border-top: 1px solid #ddd; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  figure, tr, .summary, .notes { break-inside: avoid; }
  h2 { break-after: avoid; }
}
"""


def page(title: str, body: str) -> str:
    """A complete HTML document: inline CSS, no scripts, no external resources."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
