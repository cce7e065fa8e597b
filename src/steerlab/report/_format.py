"""Number formats and figure helpers shared by the report templates and plots.

Stdlib-only at import; matplotlib loads inside :func:`new_figure`. Every formatter returns plain
text: escaping is the template environment's job (see :mod:`.render`), never done here.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DASH",
    "contiguous_runs",
    "dash",
    "data_uri_png",
    "find_key",
    "flatten",
    "fmt_float",
    "fmt_pct",
    "fmt_rate",
    "fmt_sci",
    "fmt_seconds",
    "fmt_value",
    "integer_locator",
    "is_num",
    "new_figure",
    "num_or_nan",
    "pick",
    "png_bytes",
    "run_timings",
]

DASH = "—"  # shown wherever a value is missing (None)


def is_num(x: Any) -> bool:
    """A real number (bools are not: True must not print as 1.000)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def dash(x: Any) -> Any:
    """``x``, or '—' when it is None (a missing value must not read as 'None')."""
    return DASH if x is None else x


def fmt_float(x: Any, digits: int = 3) -> str:
    """``digits`` decimals; tiny non-zero values in scientific form so they do not read as 0."""
    if x is None:
        return DASH
    if not is_num(x):
        return str(x)
    x = float(x)
    if not math.isfinite(x):
        return str(x)  # 'nan', 'inf': a real value, not a missing one
    if 1e-9 <= abs(x) < 0.5 * 10.0**-digits:  # e.g. a KL of 4e-4; float noise stays 0.000
        return f"{x:.1e}"
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no '-0.000'


def fmt_sci(x: Any, digits: int = 2) -> str:
    """Scientific notation, for error sizes that span orders of magnitude (1.2e-05)."""
    return f"{float(x):.{digits}e}" if is_num(x) else fmt_value(x)


def fmt_pct(x: Any, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage with ``digits`` decimals."""
    if x is None:
        return DASH
    if not is_num(x) or not math.isfinite(float(x)):
        return str(x)
    return f"{100.0 * float(x):.{digits}f}%"


def _valid_ci(ci: Any) -> bool:
    ok = isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2
    return ok and all(map(is_num, ci))


def fmt_rate(rate: Any, ci: Any = None, digits: int = 1) -> str:
    """``'12.5% [8.1–17.9]'``: a rate with its confidence interval in percentage points."""
    if rate is None:
        return DASH
    text = fmt_pct(rate, digits)
    if _valid_ci(ci):
        lo, hi = (100.0 * float(v) for v in ci)
        text += f" [{lo:.{digits}f}–{hi:.{digits}f}]"
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


def fmt_seconds(x: Any) -> str:
    """Seconds with one decimal; '—' where a step has no time in this column."""
    return f"{float(x):.1f}" if is_num(x) else fmt_value(x)


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


def data_uri_png(data: bytes) -> str:
    """PNG bytes as a ``data:`` URI, so the page needs no files beside it."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A bare Figure on an Agg canvas: no pyplot, no global backend switch, nothing to close."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def integer_locator() -> Any:
    """A tick locator with integer ticks only (layers, counts)."""
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes, without a version stamp (same input, same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def num_or_nan(x: Any) -> float:
    """A score as a float, NaN where missing, so lines break instead of dropping to zero."""
    return float(x) if is_num(x) else math.nan


def pick(d: Any, keys: Sequence[str]) -> dict[str, Any]:
    """``keys`` of ``d``, None where absent, so the template never meets an undefined name."""
    d = d if isinstance(d, Mapping) else {}
    return {k: d.get(k) for k in keys}


def run_timings(t: Any) -> dict[str, Any]:
    """A report's ``timings`` as the keys :func:`.render.timings_view` reads: either
    ``Run.timing_report()`` (``seconds``, ``compute_seconds``, ``resumed_steps``) or flat step
    seconds."""
    t = t if isinstance(t, Mapping) else {}
    if "seconds" in t:
        return {
            "timings": t.get("seconds"),
            "compute_seconds": t.get("compute_seconds"),
            "resumed_steps": t.get("resumed_steps"),
        }
    return {"timings": t}


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
