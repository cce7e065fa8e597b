"""``steerlab serve``: an OpenAI-compatible server that steers per request.

Requests carry their interventions in a ``steerlab`` field; concurrent greedy requests are
decoded together, one row each (:mod:`.batcher`). Directions are found by name under the runs
directory or uploaded (:mod:`.directions`). FastAPI and uvicorn are needed
(``pip install fastapi uvicorn``); importing this package does not import them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """See :func:`steerlab.serve.app.create_app`."""
    from .app import create_app as make

    return make(*args, **kwargs)
