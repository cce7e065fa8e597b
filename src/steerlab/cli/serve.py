"""``steerlab serve``: an OpenAI-compatible server with steering per request."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ..models.registry import DEFAULT_MODEL
from ..serve.config import ServeConfig
from .common import ModelOpt, ModelOptions, command
from .options import Given

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@command(config=ServeConfig)
def serve(
    opts: ModelOptions,
    model: ModelOpt = DEFAULT_MODEL,
    host: Annotated[
        str, typer.Option(help="address to bind; anything but loopback exposes the model")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    runs: Annotated[
        Path, typer.Option(help="directions (*.safetensors, by relative name) and reports")
    ] = Path("runs"),
    max_queue: Annotated[
        int, typer.Option(min=1, help="requests waiting at once; more get HTTP 429")
    ] = 64,
    max_batch: Annotated[int, typer.Option(min=1, help="most requests decoded together")] = 32,
    batch_wait_ms: Annotated[
        float,
        typer.Option(min=0.0, help="an idle worker waits until no request came for this long"),
    ] = 10.0,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.001, help="largest direction upload (MB); more get HTTP 413")
    ] = 64.0,
    max_tokens: Annotated[
        int, typer.Option(min=1, help="reply length when a request gives no max_tokens")
    ] = 128,
    *,
    given: Given,
) -> None:
    """Serve the model: OpenAI's /v1/chat/completions and /v1/completions with a "steerlab"
    field for steering, ablation and clamping per request; directions, readings and reports.

    Concurrent requests are decoded as one batch, each row with its own steering: by the
    loaded model (--engine hf), or by stock vLLM's engine (--engine vllm; its continuous
    batching and tensor parallelism; --batch-wait-ms is the hf engine's)."""
    from ..errors import MissingDependency

    try:
        import uvicorn
    except ImportError:
        raise MissingDependency(
            "steerlab serve needs uvicorn and fastapi: pip install 'steerlab[serve]'"
        ) from None
    from ..serve.app import create_app
    from ..serve.security import LOOPBACK_HOSTS, Access, parse_list
    from ..ui import console, status

    cfg = given.build(ServeConfig)
    key = cfg.api_key or os.environ.get("STEERLAB_API_KEY") or None
    if host not in LOOPBACK and not key:
        console.print(
            f"[bold yellow]warning:[/bold yellow] binding to {host}: anyone who can reach this "
            "address can use the model and upload directions (set --api-key)",
            highlight=False,
        )
    access = Access(
        api_key=key,
        allowed_hosts=LOOPBACK_HOSTS + parse_list(cfg.allowed_hosts),
        cors_origins=parse_list(cfg.cors_origins),
        max_body=int(cfg.max_body_mb * 2**20),
    )
    if opts.engine == "vllm":  # refused in one line before the model loads
        from ..engines.vllm_args import require_vllm

        require_vllm()
    lm = opts.load(model)
    backend = None
    if opts.engine == "vllm":
        from ..serve.vllm_batcher import VLLMBatcher

        status("starting vLLM")
        backend = VLLMBatcher(
            lm,
            max_queue=max_queue,
            max_batch=max_batch,
            tensor_parallel_size=opts.tensor_parallel_size,
            pipeline_parallel_size=opts.pipeline_parallel_size,
            max_model_len=opts.max_model_len,
        )
    app = create_app(
        lm,
        runs,
        max_queue=max_queue,
        max_batch=max_batch,
        batch_wait_s=batch_wait_ms / 1000,
        upload_limit=int(max_upload_mb * 2**20),
        default_max_tokens=max_tokens,
        model_name=model,
        access=access,
        max_items=cfg.max_items,
        max_uploads=cfg.max_uploads,
        backend=backend,
    )
    status(f"serving {model} on http://{host}:{port} (runs: {runs})")
    uvicorn.run(app, host=host, port=port, log_level="warning" if opts.quiet else "info")
