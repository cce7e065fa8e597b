"""Reports: self-contained HTML pages with embedded plots.

Importing this package is light; matplotlib loads only when a report is written.

Example::

    from steerlab.report import write_refusal_report
    paths = write_refusal_report(result, Path("runs/refusal"))
"""

from __future__ import annotations

from .refusal import write_refusal_report

__all__ = ["write_refusal_report"]
