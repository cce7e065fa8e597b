"""The one jinja2 environment of every steerlab report, its filters, and the views both pages
share (timings, configuration).

Templates live in ``templates/``: HTML ones (``*.html.j2``) are autoescaped, so model output,
prompts and notes can never inject markup; the markdown model card (``*.md.j2``) is not, since
escaping would garble it. Undefined names raise instead of rendering as '', so a template that
drifts from its view fails the tests rather than printing blanks.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jinja2

from . import _format as f

__all__ = ["FILTERS", "config_rows", "environment", "render", "timings_view"]

FILTERS = {
    "dash": f.dash,
    "data_uri": f.data_uri_png,
    "fmt_float": f.fmt_float,
    "fmt_pct": f.fmt_pct,
    "fmt_rate": f.fmt_rate,
    "fmt_sci": f.fmt_sci,
    "fmt_seconds": f.fmt_seconds,
    "fmt_value": f.fmt_value,
}


@functools.cache
def environment() -> jinja2.Environment:
    """The shared environment (built once; templates are cached by jinja2)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("steerlab.report", "templates"),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2", "html"), default_for_string=True, default=False
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    env.globals["DASH"] = f.DASH
    return env


def render(name: str, **context: Any) -> str:
    """Render ``templates/<name>`` with ``context``."""
    return environment().get_template(name).render(**context)


def _total(d: Mapping[str, Any]) -> Any:
    if "total" in d:
        return d["total"]
    nums = [float(v) for v in d.values() if f.is_num(v)]
    return sum(nums) if nums else None  # older reports had no total row


def timings_view(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """Per step: this session's wall seconds and the compute seconds including results reused
    from earlier sessions; ``resumed`` is None when the report does not say (older reports).
    None when there is no timing at all."""
    wall = report.get("timings")
    compute = report.get("compute_seconds")
    wall = wall if isinstance(wall, Mapping) else {}
    compute = compute if isinstance(compute, Mapping) else {}
    if not wall and not compute:
        return None
    steps = [s for s in {**wall, **compute} if s != "total"]  # this session's order first
    rows = [{"step": s, "wall": wall.get(s), "compute": compute.get(s)} for s in steps]
    resumed = report.get("resumed_steps")
    return {
        "rows": rows,
        "total": {"wall": _total(wall), "compute": _total(compute) if compute else None},
        "resumed": None if resumed is None else [str(s) for s in resumed],
    }


def config_rows(config: Any) -> list[tuple[str, Any]]:
    """Run options as (dotted name, value) pairs; [] when there are none."""
    return f.flatten(config) if isinstance(config, Mapping) else []
