"""``steerlab serve --engine``: the option, its refusal without vLLM, and the bookkeeping of
the request groups the vLLM engine installs (the engine itself: tests/test_vllm_serve.py)."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from steerlab.cli import app
from steerlab.engines.plans import split_coeffs
from steerlab.interventions.ops import op_key
from steerlab.serve.vllm_groups import PLAIN, Groups


def test_engine_is_a_serve_option() -> None:
    params = {p.name: p for p in typer.main.get_command(app).commands["serve"].params}
    assert params["engine"].default == "hf"
    for name in ("tensor_parallel_size", "pipeline_parallel_size", "max_model_len"):
        assert name in params


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_serve_engine_vllm_without_vllm_is_one_line() -> None:
    # refused before the model loads: a model name that does not exist never matters
    r = CliRunner().invoke(app, ["serve", "--engine", "vllm", "-m", "no/such-model"])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert "--engine vllm needs vLLM" in lines[0]


def _op(seed: int) -> dict[str, Any]:
    v = torch.randn(8, generator=torch.Generator().manual_seed(seed))
    return {"kind": "add", "vector": v, "layers": [1], "coeff": 1.0, "site": "resid_pre",
            "positions": "all"}  # fmt: skip


def test_groups_install_each_treatment_once_and_drop_it_after_its_last_request() -> None:
    installed: list[list[dict[str, Any]]] = []

    async def install(plan: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0)
        installed.append(plan)

    async def run() -> None:
        g = Groups(install)
        assert await g.acquire([]) == PLAIN and not installed  # untreated: nothing installed
        a = await g.acquire([_op(1)])
        a2 = await g.acquire([_op(1)])  # the same content: the same group, no reinstall
        assert a == a2 != PLAIN and len(installed) == 1
        both = await asyncio.gather(g.acquire([_op(2)]), g.acquire([_op(2), _op(3)]))
        b, c = both
        assert len({a, b, c}) == 3
        assert {x for op in installed[-1] for x in op["groups"]} == {a, b, c}
        g.release(a)
        await asyncio.sleep(0.01)
        n = len(installed)
        g.release(a2)  # a's last request: a leaves the workers
        await asyncio.sleep(0.01)
        assert len(installed) == n + 1
        assert {x for op in installed[-1] for x in op["groups"]} == {b, c}
        for x in (b, c):
            g.release(x)
        await asyncio.sleep(0.01)
        assert installed[-1] == [] and g.live == 0
        assert await g.acquire([_op(1)]) not in (a, b, c)  # ids are never reused

    asyncio.run(run())


def test_treatments_differing_only_in_strength_share_a_group_and_its_install() -> None:
    installed: list[list[dict[str, Any]]] = []

    async def install(plan: list[dict[str, Any]]) -> None:
        installed.append(plan)

    async def run() -> None:
        g = Groups(install)
        (a, ca), (b, cb) = (split_coeffs([{**_op(1), "coeff": c}]) for c in (1.0, -3.0))
        assert await g.acquire(a) == await g.acquire(b) and len(installed) == 1
        assert (ca, cb) == ([1.0], [-3.0])
        assert await g.acquire(split_coeffs([_op(2)])[0]) != await g.acquire(a)

    asyncio.run(run())


def test_a_group_released_while_the_tidy_up_installs_leaves_the_workers_too() -> None:
    # CI once found 92 hooks left after every request ended: the last group's release came
    # while the tidy-up was awaiting the install of a plan that still held that group
    installed: list[list[dict[str, Any]]] = []

    async def install(plan: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0.02)  # one engine step
        installed.append(plan)

    async def run() -> None:
        g = Groups(install)
        a, b = await g.acquire([_op(1)]), await g.acquire([_op(2)])
        g.release(a)  # the tidy-up starts: it installs b's plan alone
        await asyncio.sleep(0.005)
        g.release(b)  # while that install is under way
        await asyncio.sleep(0.2)
        assert installed[-1] == [] and g.live == 0

    asyncio.run(run())


def test_the_prefix_cache_salt_is_the_treatments_content() -> None:
    from steerlab.serve.vllm_batcher import _salt

    def salt(seed: int, coeff: float) -> str | None:
        shape, coeffs = split_coeffs([{**_op(seed), "coeff": coeff}])
        return _salt(op_key(shape), coeffs)

    assert _salt(op_key([]), []) is None  # untreated requests share the model's own cache
    assert salt(1, 1.0) == salt(1, 1.0)  # equal content, another object
    assert len({salt(1, 1.0), salt(1, 2.0), salt(2, 1.0)}) == 3
