"""``steerlab serve --engine vllm``: the server's completions decoded by stock vLLM's
``AsyncLLM`` (its continuous batching, tensor and pipeline parallelism).

It stands where the Hugging Face :class:`~.batcher.Batcher` stands (``submit``, ``close``,
``waiting``, ``stats``), so the routes, the checks and the security middleware are the same
for both engines. Each request's treatment becomes a request group (:mod:`.vllm_groups`):
its ops are hooked in every worker and the request is tagged with the group's id. Prompts are
tokenized by the Hugging Face tokenizer (both engines see the same ids); replies are rendered
by the same :class:`~.jobs.Reply` (stop strings, deltas, finish reasons). vLLM stops at the
model's end-of-reply ids and ``max_tokens``; a stop string, or a client that left, aborts its
vLLM request. vLLM's prefix cache is on: a treated request's prompt blocks are salted by its
treatment's content (``cache_salt``), so they are shared only with requests treated alike.
Readings (``/read``) run on the Hugging Face model, in a thread of their own.

vLLM runs in its own event loop, on a thread of its own: requests arrive from the server's
loop (or any thread) and their events go back through each job's ``emit``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import threading
import time
import uuid
from functools import partial
from typing import Any

from ..engines import vllm_worker
from ..engines.plans import EngineError, plan_for, split_coeffs
from ..engines.vllm_args import engine_kwargs
from ..interventions.ops import op_key
from ..models.chat import eos_ids
from ..models.load import LoadedModel
from .jobs import Call, GenJob, Job, QueueFull, Reply, run_call, safe_emit
from .running import HF_TOP_K
from .vllm_groups import Groups

__all__ = ["VLLMBatcher"]

POLL_S = 0.05  # how often a request that has no new token yet checks its client is there


class VLLMBatcher:
    """Completions on an ``AsyncLLM`` over ``lm``'s checkpoint.

    Args:
        lm: the served model (its tokenizer renders prompts; readings run on it).
        max_queue: requests waiting beyond the running ones; more are refused (HTTP 429).
        max_batch: most requests vLLM decodes together (its ``max_num_seqs``).
        engine: vLLM options (:func:`~steerlab.engines.vllm_args.engine_kwargs`:
            ``tensor_parallel_size``, ``pipeline_parallel_size``, ``max_model_len``, ...).

    ``stats`` counts ``rows`` (requests admitted), ``largest`` (most in flight), ``sampled``,
    ``calls`` (readings), ``dropped`` (requests whose client left before they started),
    ``cancelled``, ``failed``, ``installs`` (plans installed in the workers) and
    ``install_ms`` (the milliseconds those took: time a new group's requests wait).
    """

    def __init__(
        self, lm: LoadedModel, *, max_queue: int = 64, max_batch: int = 32, **engine: Any
    ) -> None:
        # prefix caching on: each treated request's prompt cache is salted by its treatment
        # (vLLM's cache_salt), so no request reads a cache another treatment wrote
        kw = {**engine_kwargs(lm, **engine), "enable_prefix_caching": True}
        self.lm = lm
        self.max_queue, self.max_batch = max_queue, max(1, max_batch)
        self.max_model_len = int(kw["max_model_len"])
        self.eos = eos_ids(lm.model, lm.tokenizer)
        keys = ["rows", "largest", "sampled", "calls", "dropped", "cancelled", "failed"]
        self.stats = dict.fromkeys([*keys, "installs", "install_ms"], 0)
        self._inflight = 0
        self._closed = False
        self._mu = threading.Lock()
        self._calls = concurrent.futures.ThreadPoolExecutor(1, "steerlab-read")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="steerlab-vllm", daemon=True
        )
        self._thread.start()
        try:
            self.engine = self._on_loop(self._start(kw)).result()
        except BaseException:
            self._stop_loop()
            raise
        self.groups = Groups(self._install)

    def _on_loop(self, coro: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _start(self, kw: dict[str, Any]) -> Any:
        """The engine, created on its loop (its output handler is a task of that loop)."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(**kw, max_num_seqs=self.max_batch, disable_log_stats=True)
        engine = AsyncLLM.from_engine_args(args)
        try:
            ok = all(await engine.collective_rpc(vllm_worker.grouping_supported))
        except BaseException:
            engine.shutdown()
            raise
        if not ok:  # requests of different treatments would share a step unseparated
            engine.shutdown()
            raise EngineError(
                "this vLLM's model runner has no batch layout steerlab can read: serve "
                "with --engine hf (or vLLM's V1 model runner: VLLM_USE_V2_MODEL_RUNNER=0)"
            )
        return engine

    async def _install(self, plan: list[dict[str, Any]]) -> None:
        # the plan travels inside the pickled callable (rpc arguments are msgpack'd, which
        # does not carry tensors nested in dicts)
        fn = partial(
            vllm_worker.install_on_worker,
            plan=plan,
            adapter=self.lm.adapter.to_dict(),
            width=self.lm.info.d_model,
        )
        t0 = time.perf_counter()
        await self.engine.collective_rpc(fn)
        self.stats["installs"] += 1
        self.stats["install_ms"] += round(1000 * (time.perf_counter() - t0))

    def hooks_installed(self) -> list[int]:
        """Hook count per worker (tests: none once every request has ended)."""
        rpc = self.engine.collective_rpc(vllm_worker.hooks_on_worker)
        return list(self._on_loop(rpc).result(60))

    def unfinished(self) -> int:
        """Requests vLLM still holds (tests: an aborted request is gone)."""
        return int(self.engine.get_num_unfinished_requests())

    # -- the Batcher's interface -------------------------------------------------------------

    @property
    def waiting(self) -> int:
        with self._mu:
            return max(0, self._inflight - self.max_batch)

    def prepare(self, job: GenJob) -> None:
        """Refuse (HTTP 400) a treatment the worker hooks cannot repeat exactly, before the
        request is queued."""
        ops = job.treatment.ops()
        if any(op["kind"] == "prompt" for op in ops):
            raise EngineError("prompt formats inside a treatment run on --engine hf only")
        job.plan = plan_for(ops, sandwich=self.lm.adapter.sandwich)

    def submit(self, job: Job) -> None:
        with self._mu:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if isinstance(job, Call):
                self._calls.submit(self._call, job)
                return
            if self._inflight - self.max_batch >= self.max_queue:
                raise QueueFull(
                    f"{self._inflight - self.max_batch} requests are already waiting (the "
                    f"limit is {self.max_queue}); retry later"
                )
            self._inflight += 1
            self.stats["largest"] = max(self.stats["largest"], self._inflight)
        self._on_loop(self._serve(job))

    def close(self, timeout: float = 30.0) -> None:
        with self._mu:
            if self._closed:
                return
            self._closed = True
        self._calls.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self._on_loop(self._shutdown()).result(timeout)
        self._stop_loop(timeout)

    async def _shutdown(self) -> None:
        """Cancel every request (each reports the shutdown) and stop the engine."""
        me = asyncio.current_task()
        for _ in range(3):  # cancelled requests release their groups: a tidy-up may follow
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.engine.shutdown()

    def _stop_loop(self, timeout: float = 30.0) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    # -- one request -------------------------------------------------------------------------

    def _call(self, job: Call) -> None:
        run_call(job, self.lm, self.stats)

    def _params(self, job: GenJob, group: int, coeffs: list[float | None]) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        sampled = job.temperature > 0
        return SamplingParams(
            temperature=job.temperature,
            top_p=job.top_p,
            top_k=HF_TOP_K if sampled else 0,  # the Hugging Face engine's distribution
            # torch reads a negative seed as its unsigned 64-bit value; vLLM reads -1 as none
            seed=job.seed % 2**64 if sampled else None,
            max_tokens=job.max_tokens,
            stop_token_ids=list(self.eos),
            logprobs=job.logprobs,
            output_kind=RequestOutputKind.DELTA,
            detokenize=False,  # Reply renders the text (stop strings too): not twice per token
            extra_args={"steerlab_group": group, "steerlab_coeffs": coeffs},
        )

    async def _serve(self, job: GenJob) -> None:
        """Decode ``job`` under its group; its events go to ``job.emit``."""
        try:
            if job.cancelled.is_set():
                self.stats["dropped"] += 1
                return
            if job.ids is None or job.plan is None:  # submitted without the route's checks
                from .batcher import prompt_ids

                job.ids = job.ids if job.ids is not None else prompt_ids(self.lm, job)
                self.prepare(job)
            reply = Reply(job, self.lm.tokenizer, len(job.ids))
            shape, coeffs = split_coeffs(job.plan or [])
            key = op_key(shape)
            gid = await self.groups.acquire(shape, key)
            try:
                self.stats["rows"] += 1
                self.stats["sampled"] += job.temperature > 0
                await self._watched(job, reply, (gid, coeffs, _salt(key, coeffs)))
            finally:
                self.groups.release(gid)
            self.stats["cancelled"] += reply.finish == "cancelled"
            safe_emit(job, "done", reply.close())
        except asyncio.CancelledError:
            safe_emit(job, "error", QueueFull("the server shut down"))
            raise
        except BaseException as e:
            self.stats["failed"] += 1
            safe_emit(job, "error", e)
        finally:
            with self._mu:
                self._inflight -= 1

    async def _watched(self, job: GenJob, reply: Reply, tag: Tag) -> None:
        """:meth:`_decode`, cancelled (its vLLM request aborted) as soon as the client goes,
        even while no token comes (the request waits, or its prompt is being prefilled)."""
        task = asyncio.ensure_future(self._decode(job, reply, tag))
        while not task.done():
            await asyncio.wait({task}, timeout=POLL_S)
            if job.cancelled.is_set() and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                reply.finish = reply.finish or "cancelled"
                return
        task.result()

    async def _decode(self, job: GenJob, reply: Reply, tag: Tag) -> None:
        from vllm.inputs import TokensPrompt

        assert job.ids is not None
        gid, coeffs, salt = tag
        rid = f"steerlab-{uuid.uuid4().hex}"
        prompt = TokensPrompt(prompt_token_ids=list(job.ids))
        if salt is not None:
            prompt["cache_salt"] = salt
        gen = self.engine.generate(prompt, self._params(job, gid, coeffs), rid)
        try:
            async for out in gen:
                c = out.outputs[0]
                if self._take(job, reply, c):
                    break  # ended here (a stop string, the client gone): aclose aborts it
                if out.finished:
                    reply.finish = "length" if c.finish_reason == "length" else "stop"
                    break
        finally:
            await gen.aclose()  # aborts the vLLM request when it had not finished

    def _take(self, job: GenJob, reply: Reply, c: Any) -> bool:
        """Feed the new tokens of one output to ``reply``; True when it has ended."""
        eos = set(self.eos)
        for i, tok in enumerate(c.token_ids):
            if tok in eos:
                return reply.push(None)
            if job.logprobs is not None and c.logprobs:
                d, n = c.logprobs[i], job.logprobs
                top = sorted(((t, v.logprob) for t, v in d.items() if v.rank <= n), key=_neg)
                reply.note_logprobs(tok, d[tok].logprob, top[:n])
            if reply.push(tok):
                return True
        return False


def _neg(tv: tuple[int, float]) -> float:
    return -tv[1]


Tag = tuple[int, list[float | None], str | None]  # group id, coefficients, cache salt


def _salt(key: Any, coeffs: list[float | None]) -> str | None:
    """The prefix-cache salt of a treatment (``key``: its ops' :func:`op_key`): its content,
    coefficients included; None untreated (those share the model's own cache)."""
    if not key:
        return None
    return hashlib.sha256(repr((key, coeffs)).encode()).hexdigest()
