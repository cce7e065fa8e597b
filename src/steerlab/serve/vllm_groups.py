"""The treatments installed in vLLM's workers while ``steerlab serve --engine vllm`` runs.

Each distinct treatment (by the content of its worker plan, steering coefficients aside:
:func:`~steerlab.engines.plans.split_coeffs`) is a request group with its own id; its
requests carry the id (``SamplingParams.extra_args["steerlab_group"]``) and their own
coefficients (``"steerlab_coeffs"``), and the
workers' hooks change only those requests' tokens (:class:`~steerlab.engines.vllm_worker.
Rows`). The plan installed is every live group's, merged; it is reinstalled (one
``collective_rpc``, run by the engine between two steps) before a request of a new group is
added, and after the last request of a group ends. Ids are never reused, so a request that
outlives its group (aborted, still in the step) is never given another group's ops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ..engines.plans import merge_plans
from ..interventions.ops import Op, op_key

__all__ = ["PLAIN", "Groups"]

PLAIN = 0  # the group of untreated requests: never installed, still tagged


class Groups:
    """Live request groups by plan content, their users, and the plan the workers hold.

    ``install(plan)`` replaces the workers' hooks with ``plan``'s (awaited; an empty plan
    removes them). Call every method from the engine's event loop.
    """

    def __init__(self, install: Callable[[list[dict[str, Any]]], Awaitable[Any]]) -> None:
        self._install = install
        self._ids: dict[Any, int] = {}
        self._plans: dict[int, list[Op]] = {}
        self._users: dict[int, int] = {}
        self._installed: frozenset[int] = frozenset()
        self._lock = asyncio.Lock()
        self._next = PLAIN + 1
        self._tidy: asyncio.Task[None] | None = None
        self.installs = 0

    @property
    def live(self) -> int:
        return len(self._plans)

    async def acquire(self, plan: list[Op], key: Any = None) -> int:
        """The group id for ``plan``, its ops installed in every worker on return (``key``:
        ``op_key(plan)``, where the caller has it already)."""
        if not plan:
            return PLAIN
        key = op_key(plan) if key is None else key
        gid = self._ids.get(key)
        if gid is None:
            gid, self._next = self._next, self._next + 1
            self._ids[key], self._plans[gid], self._users[gid] = gid, plan, 0
        self._users[gid] += 1  # counted before awaiting: a concurrent release keeps it
        try:
            async with self._lock:
                if gid not in self._installed:
                    await self._sync()
        except BaseException:
            self.release(gid)
            raise
        return gid

    def release(self, gid: int) -> None:
        """One request of ``gid`` ended; its ops leave the workers once none is left."""
        if gid == PLAIN:
            return
        self._users[gid] -= 1
        if self._users[gid]:
            return
        del self._users[gid], self._plans[gid]
        self._ids = {k: v for k, v in self._ids.items() if v != gid}
        if self._tidy is None or self._tidy.done():  # one pending tidy-up covers every drop
            self._tidy = asyncio.ensure_future(self._drop())

    async def _drop(self) -> None:
        # a failed reinstall leaves dead groups' ops in place: masked to no token, harmless.
        # Re-checked after each install: a group whose last request ended while the install
        # was under way is still in what it installed, and no other tidy-up was started.
        with contextlib.suppress(Exception):
            async with self._lock:
                while self._installed - set(self._plans):
                    await self._sync()

    async def _sync(self) -> None:
        """Install every live group's plan (the lock held)."""
        ids = sorted(self._plans)
        await self._install(merge_plans([self._plans[g] for g in ids], ids))
        self._installed = frozenset(ids)
        self.installs += 1
