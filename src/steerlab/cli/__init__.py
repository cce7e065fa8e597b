"""Command line: a thin layer over the Python API, one module per command (the app that
registers them is in :mod:`.app`).

Heavy imports (torch, transformers) happen inside the commands, so ``--help`` is instant.
"""

from .app import app, main

__all__ = ["app", "main"]
