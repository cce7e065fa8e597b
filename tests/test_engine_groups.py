"""Request groups of the vLLM engine, checked without vLLM: how plans merge, how the worker's
hooks find each group's tokens in a flattened batch (a model runner's layout), and the
several-treatments generation call on the Hugging Face engine."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_model, make_tokenizer

from steerlab.engines import HFEngine
from steerlab.engines.plans import merge_plans
from steerlab.engines.vllm_worker import Rows
from steerlab.generation import generate
from steerlab.interventions import NoOp, Steer, apply
from steerlab.interventions.arithmetic import project_out, shift
from steerlab.models.adapter import get_adapter
from steerlab.models.load import LoadedModel, model_info


def _add(layer: int, seed: int) -> dict:
    v = torch.randn(8, generator=torch.Generator().manual_seed(seed))
    (op,) = Steer(v, layers=layer).ops()
    return op


def test_equal_ops_are_hooked_once_for_every_group_that_holds_them() -> None:
    a, b = _add(3, 0), _add(3, 1)
    same_a = {**a, "vector": a["vector"].clone()}  # equal content, another object
    plan = merge_plans([[], [a], [same_a, b], [b, a]])
    got = [(op["vector"][0].item(), op["groups"]) for op in plan]
    # a at place 0 serves groups 1 and 2; b at place 0 (group 3) is another hook than b at
    # place 1 (group 2), so each group keeps its own order
    assert [g for _, g in got] == [[1, 2], [3], [2], [3]]
    assert got[0][0] == a["vector"][0].item()
    assert got[1][0] == b["vector"][0].item()


def _runner(groups: list[int | None], tokens: list[int]) -> SimpleNamespace:
    ids = [f"r{i}" for i in range(len(groups))]
    reqs = {
        rid: SimpleNamespace(
            sampling_params=SimpleNamespace(extra_args=None if g is None else {"steerlab_group": g})
        )
        for rid, g in zip(ids, groups, strict=True)
    }
    qsl = np.concatenate([[0], np.cumsum(tokens)]).astype(np.int32)
    return SimpleNamespace(
        input_batch=SimpleNamespace(req_ids=ids, num_reqs=len(ids)),
        query_start_loc=SimpleNamespace(np=qsl),
        requests=reqs,
    )


def test_rows_mark_each_groups_tokens_and_leave_padding_alone() -> None:
    # a prefill of 3 tokens (group 0), two decode tokens (groups 1, 0), 2 padding tokens
    rows = Rows(_runner([0, 1, 0], [3, 1, 1]))
    x = torch.zeros(7, 4, dtype=torch.bfloat16)
    assert rows.mask((0,), x).squeeze(-1).tolist() == [1, 1, 1, 0, 1, 0, 0]
    assert rows.mask((1,), x).squeeze(-1).tolist() == [0, 0, 0, 1, 0, 0, 0]
    assert rows.mask((0, 1), x).dtype == torch.bfloat16
    rows.stale()  # the next step: another layout
    rows.runner = _runner([1], [2])
    assert rows.mask((1,), torch.zeros(2, 4)).squeeze(-1).tolist() == [1, 1]


def test_masked_hooks_change_exactly_their_rows() -> None:
    rows = Rows(_runner([0, 1], [2, 2]))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, generator=g)
    d = torch.randn(8, generator=g)
    u = torch.nn.functional.normalize(torch.randn(8, generator=g), dim=0)
    added = shift(x, d, rows.mask((1,), x))
    assert torch.equal(added[:2], x[:2]) and torch.equal(added[2:], x[2:] + d)
    removed = project_out(x, u, rows.mask((0,), x))
    assert torch.equal(removed[2:], x[2:])
    assert torch.equal(removed[:2], project_out(x, u)[:2])


def test_a_request_without_a_group_is_an_error_not_an_unsteered_row() -> None:
    rows = Rows(_runner([0, None], [1, 1]))
    with pytest.raises(RuntimeError, match="no steerlab group"):
        rows.mask((0,), torch.zeros(2, 4))


def test_generate_jobs_on_the_hf_engine_runs_each_job_under_its_treatment() -> None:
    m = make_model("llama")
    ad = get_adapter(m)
    lm = LoadedModel(m, make_tokenizer(), ad, model_info(m, "tiny-llama", ad))
    prompts = ["i am so happy today", "tell me about your day", "what a day"]
    v = torch.randn(m.config.hidden_size, generator=torch.Generator().manual_seed(1)) * 8
    jobs = [(NoOp(), prompts), (Steer(v, layers=2), []), (Steer(v, layers=1), prompts[:2])]
    seen: list[int] = []
    got = HFEngine().generate_jobs(lm, jobs, max_new_tokens=6, progress=seen.append)
    assert sum(seen) == 5
    assert got[1] == []
    for (iv, ps), texts in [(jobs[0], got[0]), (jobs[2], got[2])]:
        with apply(lm, iv):
            assert texts == generate(lm.model, lm.tokenizer, ps, max_new_tokens=6)
    assert got[0][:2] != got[2]
