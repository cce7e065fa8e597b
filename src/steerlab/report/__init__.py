"""Reports: self-contained HTML pages with embedded plots.

Pages are rendered from the jinja2 templates in ``templates/`` through one autoescaping
environment (:mod:`.render`); the modules here only turn report dicts into template views.
Importing this package is light; matplotlib loads only when a report is written.

Example::

    from steerlab.report import write_refusal_report
    paths = write_refusal_report(result, Path("runs/refusal"))
"""

from __future__ import annotations

from .refusal import refusal_files, write_refusal_report

__all__ = ["refusal_files", "write_refusal_report"]
