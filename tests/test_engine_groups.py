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
from steerlab.engines.plans import merge_plans, split_coeffs
from steerlab.engines.vllm_worker import Rows, _install_op
from steerlab.generation import generate
from steerlab.interventions import Ablate, NoOp, Steer, apply
from steerlab.interventions.arithmetic import project_out, scaled, shift
from steerlab.interventions.ops import op_key
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


def _runner(
    groups: list[int | None], tokens: list[int], coeffs: list[list[float | None]] | None = None
) -> SimpleNamespace:
    ids = [f"r{i}" for i in range(len(groups))]
    cs = coeffs or [[] for _ in groups]

    def args(g: int | None, c: list[float | None]) -> dict | None:
        return None if g is None else {"steerlab_group": g, "steerlab_coeffs": c}

    reqs = {
        rid: SimpleNamespace(sampling_params=SimpleNamespace(extra_args=args(g, c)))
        for rid, g, c in zip(ids, groups, cs, strict=True)
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


def test_plans_differing_only_in_coefficients_share_one_shape() -> None:
    a = _add(3, 0)
    plans = [[{**a, "coeff": c}, *Ablate(a["vector"]).ops()] for c in (1.0, -2.5)]
    (s1, c1), (s2, c2) = (split_coeffs(p) for p in plans)
    assert op_key(s1) == op_key(s2) and op_key(s1) != op_key(split_coeffs([a])[0])
    assert (c1, c2) == ([1.0, None], [-2.5, None])
    assert s1[0]["coeff"] is None and s1[0]["coeff_at"] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_request_coefficient_adds_exactly_what_that_steer_alone_adds(
    dtype: torch.dtype,
) -> None:
    # three requests of one group with their own coefficients, one of another group, padding
    coeffs = [0.37, -2.0, 0.0, 5.0]
    rows = Rows(_runner([1, 1, 1, 2], [2, 1, 1, 1], [[c] for c in coeffs]))
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(7, 8, generator=g) * 3).to(dtype)
    v = torch.randn(8, generator=g)
    m = rows.mask((1,), x)
    got = shift(x, scaled(rows.coeff(0, x), v), m)
    tok = [0, 0, 1, 2, 3]
    for t, r in enumerate(tok):
        if r < 3:  # the group's rows: the scalar steer's delta (float32 product, then cast)
            assert torch.equal(got[t], shift(x[t], (coeffs[r] * v).to(dtype)))
        else:
            assert torch.equal(got[t], x[t])
    assert torch.equal(got[5:], x[5:])


def test_a_hooked_per_request_steer_reads_its_coefficients_from_the_step_layout() -> None:
    # a vLLM decoder layer's call: (positions, hidden_states, residual) on flattened tokens
    class Layer(torch.nn.Module):  # stands for a decoder layer: only its hooks change things
        def forward(self, positions: object, hidden_states: object, residual: object) -> object:
            return hidden_states, residual

    m = Layer()
    rows = Rows(_runner([1, 2], [2, 1], [[None, 2.0], [None, -1.0]]))
    v = torch.randn(8, generator=torch.Generator().manual_seed(2))
    (op,) = split_coeffs([*Ablate(v).ops(), *Steer(v, layers=0).ops()])[0][1:]
    layers = {0: m}
    handles: list = []

    def pre(block: torch.nn.Module, fn: object) -> None:
        handles.append(block.register_forward_pre_hook(fn, with_kwargs=True))

    _install_op({**op, "groups": [1, 2]}, (rows, (1, 2)), layers, 1, 8, {}, pre, handles)
    hs, res = torch.randn(3, 8), torch.randn(3, 8)
    got, got_res = m(torch.arange(3), hs, residual=res)
    want = torch.stack([hs[0] + 2.0 * v, hs[1] + 2.0 * v, hs[2] + -1.0 * v])
    assert torch.equal(got, want) and got_res is res


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
