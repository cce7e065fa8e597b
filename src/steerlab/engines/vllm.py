"""Decoding on stock vLLM, with steerlab's treatments repeated inside its workers.

The Hugging Face model stays loaded beside the engine: it renders and tokenizes prompts (so
both engines see the same token ids) and scores teacher-forced quantities. Each call receives
its treatments explicitly (interventions, one per row or per job): their ops
(:mod:`steerlab.interventions.ops`) become hooks installed in every vLLM worker through
``collective_rpc`` (each tensor-parallel rank and pipeline stage hooks its own layers), removed
in ``finally``. Prefix caching is off: a steered request must never be served the cache an
unsteered one left. CUDA graphs and compilation are off (``enforce_eager``): hooks only run in
eager mode. vLLM's logs go to stderr, so a command's own output on stdout stays clean.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from ..errors import VectorError
from ..models.chat import eos_ids
from ..models.load import LoadedModel
from ..prefix import token_rows
from . import vllm_worker
from .base import Generated, OnStep, Progress
from .plans import EngineError, merge_plans, plan_for, prompt_tokenizer
from .vllm_args import SUPPORTED, engine_kwargs

__all__ = ["SUPPORTED", "EngineError", "VLLMEngine", "merge_plans", "plan_for"]


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
        kw = engine_kwargs(
            lm,
            tensor_parallel_size=tensor_parallel_size,
            pipeline_parallel_size=pipeline_parallel_size,
            max_model_len=max_model_len,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            distributed_executor_backend=distributed_executor_backend,
            seed=seed,
        )
        from vllm import LLM

        self.lm = lm
        self.tokenizer = lm.tokenizer
        self.options = {k: v for k, v in kw.items() if k not in ("model", "tokenizer")}
        self.llm = LLM(**kw)
        self._grouping: bool | None = None

    def identity(self) -> dict[str, Any]:
        """What this engine's numbers depend on (recorded in runs, keys their caches)."""
        import vllm

        keep = ("dtype", "tensor_parallel_size", "pipeline_parallel_size", "max_model_len")
        opts = {k: self.options[k] for k in keep}
        return {"name": self.name, "version": vllm.__version__, **opts}

    # -- the worker side -------------------------------------------------------------------

    def _rpc(self, fn: Any) -> list[Any]:
        return list(self.llm.apply_model(fn))

    def hooks_installed(self) -> list[int]:
        """Hook count per worker (tests: zero outside a generate call)."""
        return self._rpc(vllm_worker.count_hooks)

    # -- generation --------------------------------------------------------------------------

    def token_ids(
        self,
        lm: LoadedModel,
        prompts: Sequence[str],
        ops: Sequence[Any] = (),
        chat: bool | None = None,
    ) -> list[list[int]]:
        """Each prompt rendered (with the treatment's prompt ops) and tokenized exactly as the
        Hugging Face path does."""
        return token_rows(prompt_tokenizer(lm.tokenizer, ops), list(prompts), chat, None)

    def _plan(self, lm: LoadedModel, ops: list) -> list[dict[str, Any]]:
        return plan_for(ops, sandwich=lm.adapter.sandwich)

    def generate(
        self,
        lm: LoadedModel,
        prompts: Sequence[str],
        treatment: Any = None,
        *,
        max_new_tokens: int = 48,
        batch_size: int = 8,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = 0,
        chat: bool | None = None,
        progress: Progress | None = None,
    ) -> list[str]:
        """Every prompt in one call (vLLM batches continuously; ``batch_size`` is the HF
        engine's)."""
        ops = treatment.ops() if treatment is not None else []
        (new,) = self.generate_groups(
            [(self.token_ids(lm, prompts, ops, chat), self._plan(lm, ops))],
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop_ids=eos_ids(lm.model, lm.tokenizer),
            progress=progress,
        )
        return [lm.tokenizer.decode(t, skip_special_tokens=True) for t in new]

    def generate_rows(
        self,
        lm: LoadedModel,
        prompts: Sequence[str],
        rows: Sequence[Any],
        *,
        around: Any = None,
        max_new_tokens: int = 32,
        batch_rows: int = 64,
        chat: bool | None = None,
        progress: Progress | None = None,
        on_step: OnStep | None = None,
    ) -> Generated:
        """New tokens per row: one vLLM call, each distinct row treatment (by identity) a
        request group under ``around``'s ops then its own (rows keep their order)."""
        if on_step is not None:
            raise EngineError("stepwise streaming and cancelling run on --engine hf only")
        if len(prompts) != len(rows):
            raise VectorError(f"{len(prompts)} prompts for {len(rows)} row treatments")
        base = around.ops() if around is not None else []
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault(id(r), []).append(i)
        order = list(groups.values())
        jobs = []
        for idx in order:
            ops = base + rows[idx[0]].ops()
            ids = self.token_ids(lm, [prompts[i] for i in idx], ops, chat)
            jobs.append((ids, self._plan(lm, ops)))
        got = self.generate_groups(
            jobs,
            max_new_tokens=max_new_tokens,
            stop_ids=eos_ids(lm.model, lm.tokenizer),
            progress=progress,
        )
        out: list[list[int]] = [[] for _ in prompts]
        for idx, g in zip(order, got, strict=True):
            for i, t in zip(idx, g, strict=True):
                out[i] = t
        texts = [lm.tokenizer.decode(t, skip_special_tokens=True) for t in out]
        return Generated(texts, [len(t) for t in out])

    def generate_jobs(
        self,
        lm: LoadedModel,
        jobs: Sequence[tuple[Any, Sequence[str]]],
        *,
        max_new_tokens: int = 48,
        batch_size: int = 8,
        chat: bool | None = None,
        progress: Progress | None = None,
    ) -> list[list[str]]:
        """Every job decodes in a single call, each a request group under its own treatment
        (the throughput of one large batch); nothing is applied to the Hugging Face model."""
        groups = []
        for iv, prompts in jobs:
            if not prompts:  # an empty job keeps its place
                groups.append(([], []))
                continue
            ops = iv.ops()
            groups.append((self.token_ids(lm, prompts, ops, chat), self._plan(lm, ops)))
        new = self.generate_groups(
            groups,
            max_new_tokens=max_new_tokens,
            stop_ids=eos_ids(lm.model, lm.tokenizer),
            progress=progress,
        )
        return [[lm.tokenizer.decode(t, skip_special_tokens=True) for t in g] for g in new]

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
        outs = self._run(plan, prompts, params, progress)
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

    def _run(
        self,
        plan: list[dict[str, Any]],
        prompts: list[Any],
        params: list[Any],
        progress: Callable[[int], None] | None,
    ) -> list[Any]:
        """One ``LLM.generate`` call with ``plan``'s hooks installed in every worker (removed
        after, on any exit)."""
        bar = _progress_bar(progress) if progress else False
        try:
            if plan:
                # the plan travels inside the pickled callable (rpc arguments are msgpack'd,
                # which does not carry tensors nested in dicts)
                install = partial(
                    vllm_worker.install_on_worker,
                    plan=plan,
                    adapter=self.lm.adapter.to_dict(),
                    width=self.lm.info.d_model,
                )
                self.llm.collective_rpc(install)
            outs = self.llm.generate(prompts, params, use_tqdm=bar)
        except BaseException:
            if plan:  # the engine may be dead: never hide the first error behind this one
                with contextlib.suppress(Exception):
                    self._rpc(vllm_worker.remove)
            raise
        if plan:
            self._rpc(vllm_worker.remove)
        return list(outs)

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
