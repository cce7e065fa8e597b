"""Reports: the shared parts of every self-contained HTML page with embedded plots.

Pages are rendered from the jinja2 templates in ``templates/`` through one autoescaping
environment (:mod:`.render`), with the number formats of :mod:`._format`. Each pipeline's page
(its view) sits beside the pipeline (``steerlab.refusal.report``, ``steerlab.melbo.page``, ...),
so this package imports no pipeline. Importing it is light; matplotlib loads only when a
figure is drawn.

Example::

    from steerlab.refusal.report import write_refusal_report
    paths = write_refusal_report(result, Path("runs/refusal"))
"""

from __future__ import annotations

__all__: list[str] = []
