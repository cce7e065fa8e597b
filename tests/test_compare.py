"""``steerlab compare``: the statistics and choices it rests on, then end to end on the built-in
model (tiny sizes): the contract, resume from the journal, finetuning that learns and leaves
the model as it was, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EVAL_PROMPTS as PROMPTS
from typer.testing import CliRunner

from steerlab.behaviors.behavior import load_behavior
from steerlab.cli import app
from steerlab.compare import CompareConfig, CompareReport, run_compare
from steerlab.compare.contrasts import build_contrasts, winners
from steerlab.compare.finetune import lora_config, target_modules, train_lora
from steerlab.compare.methods import contrast_prompt, few_shot, fit_direction
from steerlab.compare.report import pareto_front, render_compare_html
from steerlab.compare.summary import summarize_runs
from steerlab.configs import ConfigError
from steerlab.interventions.lora import LoRA
from steerlab.metrics.stats import mean_ci, nested_mean_ci
from steerlab.models.fingerprint import weights_fingerprint
from steerlab.models.load import LoadedModel, load_model
from steerlab.runs import _finite

TINY = dict(
    train_sizes=(1, 2),
    draws=2,
    layers="10",
    lora_steps=2,
    lora_lrs=(1e-3,),
    dpo_lrs=(5e-4,),
    checkpoints=2,
    max_new_tokens=4,
    selection_prompts=2,
    neutral_prompts=2,
    coeffs=(0.25, 0.5),
    random_directions=3,
)

# compare.json's key order, a contract with the scripts that read it
SUMMARY_KEYS = [
    "method", "n", "score", "ci", "rate", "rate_ci", "rate_threshold", "ce", "within_bound",
    "similarity", "degenerate", "selection_score", "fit_seconds", "examples_per_second",
    "budget", "kl", "distinct2", "draws", "prompts", "uses_examples",
]  # fmt: skip
CONTRAST_KEYS = ["a", "b", "n", "kind", "diff", "ci", "p", "prompts", "p_holm"]


# -- statistics and choices (no model) -----------------------------------------------------


def test_nested_interval_counts_the_spread_between_draws() -> None:
    rng = np.random.default_rng(0)
    same = rng.normal(0.5, 0.1, size=(1, 24))
    assert nested_mean_ci(same) == mean_ci(same[0])
    tight = np.vstack([same[0], same[0] + 0.001])
    apart = np.vstack([same[0] - 0.2, same[0] + 0.2])  # draws that disagree
    lo_t, hi_t = nested_mean_ci(tight)
    lo_a, hi_a = nested_mean_ci(apart)
    assert lo_t < tight.mean() < hi_t and lo_a < apart.mean() < hi_a
    assert hi_a - lo_a > 2 * (hi_t - lo_t)
    with pytest.raises(ValueError):
        nested_mean_ci(np.zeros(3))


def test_one_pair_gives_one_direction_and_pca_agrees_in_sign() -> None:
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(1, 16, generator=g), torch.randn(1, 16, generator=g)
    md, pca = fit_direction("mean_diff", pos, neg), fit_direction("pca", pos, neg)
    assert torch.allclose(md, pca, atol=1e-6) and abs(float(md.norm()) - 1) < 1e-6
    pos, neg = torch.randn(8, 16, generator=g) + 3, torch.randn(8, 16, generator=g)
    assert float(fit_direction("pca", pos, neg) @ fit_direction("mean_diff", pos, neg)) > 0


def _run(
    method: str,
    n: int | None,
    draw: int,
    scores: list[float],
    sel: float = 0.5,
    within: bool = True,
    similarity: float = 0.05,
) -> dict:
    return {
        "method": method,
        "n": n,
        "draw": draw,
        "scores": scores,
        "ce": 1.0,
        "kl": 0.0,
        "distinct2": 1.0,
        "similarity": similarity,
        "score": float(np.mean(scores)),
        "fit_seconds": 2.0 if n else 0.0,
        "chosen": {"within_bound": within, "selection": {"score": sel}},
    }


def _report_dict(**parts: object) -> dict:
    """A whole ``compare.json`` around the ``parts`` a test gives (the rest: small values)."""
    return {
        "kind": "compare",
        "steerlab_version": "0.0.test",
        "model": {"model_id": "tiny-model", "model_type": "llama", "n_layers": 4, "d_model": 8},
        "provenance": {},
        "behavior": {"name": "tiny-sentiment", "scorer": "sentiment"},
        "scorer": {"name": "sentiment"},
        "config": {"draws": 2, "max_ce_increase": 1.0},
        "methods": [],
        "skipped": {},
        "train_sizes": [],
        "layers": [2],
        "norms": {"2": 3.0},
        "pool": {"pairs": 8, "draw_rule": "seeded permutation per draw; N = its first N"},
        "splits": {"selection": 2, "test": 24, "neutral": 2},
        "rule": "highest mean score under the bound",
        "unsteered_selection": {"score": 0.3, "ce": 1.0, "similarity": 0.05},
        "summary": [],
        "runs": [],
        "examples": {},
        "cost": {"rows_generated": 0, "tokens_generated": 0},
        "timings": {},
        "contrasts": [],
        "winners": [],
        "random_null": None,
        **parts,
    }


def test_winner_only_from_paired_contrasts_among_methods_within_the_bound() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.8, 24).tolist()  # prompts differ a lot from one another
    up = [x + 0.08 + rng.normal(0, 0.01) for x in base]  # the same prompts, every one higher
    runs = [
        *(_run("unsteered", None, d, base) for d in (0, 1)),
        *(_run("zero_shot", None, d, base, sel=0.6) for d in (0, 1)),
        *(_run("mean_diff", 4, d, up, sel=0.7) for d in (0, 1)),
        *(_run("lora", 4, d, base, sel=0.65) for d in (0, 1)),
        # highest test score, but over the bound: cannot win the constrained view
        *(_run("few_shot", 4, d, [x + 0.12 for x in base], sel=0.9, within=False) for d in (0, 1)),
    ]
    methods = ["unsteered", "mean_diff", "zero_shot", "few_shot", "lora"]
    summary = summarize_runs(runs, methods, [4])
    rows = {r["method"]: r for r in summary}
    for r in summary:
        assert {"method", "n", "score", "ci", "ce", "within_bound", "degenerate"} <= set(r)
        assert {"rate", "rate_ci"} <= set(r) and r["rate_ci"][0] <= r["rate"] <= r["rate_ci"][1]
    assert rows["few_shot"]["within_bound"] is False and rows["mean_diff"]["within_bound"]
    # the unpaired intervals overlap: they alone would declare nothing
    assert rows["mean_diff"]["ci"][0] < rows["zero_shot"]["ci"][1]
    contrasts = build_contrasts(runs, summary, [4], {}, seed=0)
    for c in contrasts:
        assert {"a", "b", "n", "diff", "ci", "p", "p_holm"} <= set(c) and c["p"] <= c["p_holm"]
    w = {x["view"]: x for x in winners(contrasts, summary, [4])}
    assert w["constrained"]["method"] == "mean_diff"  # beats zero_shot and lora, paired
    assert w["constrained"]["family_best"]["prompting"] == "zero_shot"
    assert w["unconstrained"]["family_best"]["prompting"] == "few_shot"
    assert w["unconstrained"]["method"] == "few_shot"  # +0.04 on every prompt over mean_diff
    page = render_compare_html(
        _report_dict(
            methods=methods,
            train_sizes=[4],
            summary=summary,
            winners=list(w.values()),
            contrasts=contrasts,
            runs=runs,
        )
    )
    assert page.count("</strong> ★") == 1 and "†" in page
    # the typed report is these dicts, key for key and in order
    d = _report_dict(methods=methods, train_sizes=[4], summary=summary, contrasts=contrasts,
                     winners=winners(contrasts, summary, [4]), runs=runs)  # fmt: skip
    assert json.dumps(CompareReport.from_dict(d).to_dict()) == json.dumps(d)
    assert [list(r) for r in summary] == [SUMMARY_KEYS] * len(summary)
    assert {tuple(c) for c in contrasts if c["kind"] == "vs unsteered"} == {tuple(CONTRAST_KEYS)}


def test_a_memorized_reply_is_flagged_and_loses_the_choice() -> None:
    from steerlab.evaluate.select import choose
    from steerlab.metrics.text import cross_prompt_similarity

    same = ["What a wonderful, happy day it is!"] * 6
    varied = ["I like cats.", "The train leaves at noon.", "Paris is in France.",
              "Water boils at 100 C.", "She sings well.", "Rain again today."]  # fmt: skip
    assert cross_prompt_similarity(same) == 1.0 and cross_prompt_similarity(varied) < 0.1
    cells = [
        {"score": 0.93, "ce": 0.5, "similarity": cross_prompt_similarity(same)},
        {"score": 0.80, "ce": 0.6, "similarity": cross_prompt_similarity(varied)},
    ]
    pick = choose(cells, 0.5, 1.0)
    assert pick["cell"] is cells[1] and not pick["degenerate"]
    only = choose(cells[:1], 0.5, 1.0)  # no other candidate: chosen, and flagged
    assert only["degenerate"] and only["cell"] is cells[0]


def test_report_renders_an_interval_that_misses_its_mean() -> None:
    # Defect: pareto_figure raised "'yerr' must not contain negative values" after a 7.6
    # minute run, and report.html was never written.
    row = summarize_runs([_run("lora+mean_diff", 1, 0, [0.928] * 4)], ["lora+mean_diff"], [1])[0]
    row |= {"score": 0.928, "ci": [0.93, 0.95], "ce": 1.0}
    page = render_compare_html(
        _report_dict(methods=["lora+mean_diff"], train_sizes=[1], summary=[row])
    )
    assert "data:image/png;base64," in page


def test_pareto_front_keeps_only_undominated_points() -> None:
    pts = [
        {"method": "a", "ce": 1.0, "score": 0.5},
        {"method": "b", "ce": 2.0, "score": 0.4},  # dominated by a
        {"method": "c", "ce": 3.0, "score": 0.9},
    ]
    assert [p["method"] for p in pareto_front(pts)] == ["a", "c"]


def test_config_refuses_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown method"):
        CompareConfig(methods="mean_diff,telepathy")
    with pytest.raises(ConfigError, match="at least 1"):
        CompareConfig(train_sizes="0,4")
    with pytest.raises(ConfigError, match="coeffs"):
        CompareConfig(coeffs=(float("nan"),))
    assert CompareConfig(methods="lora").methods == ("unsteered", "lora")


def test_a_stacked_candidate_runs_as_a_row_under_its_base_like_the_composed_treatment() -> None:
    """compare measures ``Compose((base, Steer))`` as a per-row addition under the base's view
    (so candidates sharing a base share batches): the same tokens as applying the Compose."""
    from conftest import make_model, make_tokenizer

    from steerlab.compare.state import _split
    from steerlab.engines.rows import greedy_rows
    from steerlab.generation import generate
    from steerlab.interventions import Compose, NoOp, PromptPrefix, Steer, apply
    from steerlab.models.adapter import get_adapter
    from steerlab.models.load import model_info

    m = make_model("llama")
    ad = get_adapter(m)
    tiny = LoadedModel(m, make_tokenizer(), ad, model_info(m, "tiny-llama", ad))
    prompts = ["tell me about your day", "what a day"]
    base = PromptPrefix(prefix="i am so happy today and ")
    v = torch.randn(tiny.info.d_model, generator=torch.Generator().manual_seed(0))
    t = Compose((base, Steer(v / v.norm(), layers=2, coeff=8.0)))
    got_base, row = _split(t)
    assert got_base is base and row is t.items[1]
    with apply(tiny, t) as view:
        want = generate(view.model, view.tokenizer, prompts, max_new_tokens=6)
    with base.applied(tiny) as view:
        rows = greedy_rows(view, prompts, [row, row], max_new_tokens=6).texts
        plain = greedy_rows(view, prompts, [NoOp()] * 2, max_new_tokens=6).texts
    assert rows == want and rows != plain


# -- on the built-in model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return load_model("smollm2-135m")


def _behavior(tmp_path: Path, pairs: int = 4, **extra: object) -> Path:
    src = load_behavior("builtin:sentiment")
    data = {
        "name": "tiny-sentiment",
        "scorer": "sentiment",
        "description": "Respond with a clearly positive, upbeat, happy tone.",
        "eval_prompts": PROMPTS,
        "positive": "builtin:happy",
        "negative": "builtin:sad",
        "pairs": [
            {"prompt": p.prompt, "positive": p.positive, "negative": p.negative}
            for p in src.pairs[:pairs]
        ],
        **extra,
    }
    p = tmp_path / "beh.json"
    p.write_text(json.dumps(data))
    return p


def test_few_shot_keeps_what_fits_the_context(lm: LoadedModel) -> None:
    pairs = [(p.prompt, p.positive, p.negative) for p in load_behavior("builtin:sentiment").pairs]
    _, all_fit = few_shot(lm, pairs[:3], 4096, PROMPTS[0])
    assert all_fit == 3
    treat, k = few_shot(lm, pairs, 300, PROMPTS[0])
    assert 0 < k < len(pairs)
    with treat.applied(lm) as view:
        from steerlab.models.chat import encode

        assert int(encode(view.tokenizer, [PROMPTS[0]]).attention_mask.sum()) <= 300
    c, kc = contrast_prompt(lm, pairs, 300, PROMPTS[0])
    assert 0 < kc < len(pairs) and "Good response:" in c.suffix


def test_reply_log_likelihood_equals_one_row_at_a_time(lm: LoadedModel) -> None:
    """The training loss reads logits only from the replies on (the output head skips the
    prompt): the batched sum equals each row's full-sequence log-likelihood of its reply."""
    from steerlab.compare.finetune import _logp, _rows
    from steerlab.models.chat import pad_id

    src = load_behavior("builtin:sentiment").pairs[:4]
    rows = _rows(lm, [p.prompt for p in src], [p.negative for p in src], None)
    assert len({len(r) - k for r, k in rows}) > 1  # prompts of different lengths
    with torch.no_grad():
        got = _logp(lm.model, rows, pad_id(lm.tokenizer))
        for j, (r, k) in enumerate(rows):
            ids = torch.tensor([r])
            lp = lm.model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            want = lp[torch.arange(len(r) - 1), ids[0, 1:]][-k:].sum()
            assert abs(float(got[j]) - float(want)) < 1e-3


def test_lora_sft_and_dpo_learn_and_leave_the_model_as_it_was(lm: LoadedModel) -> None:
    pairs = [
        (p.prompt, p.positive, p.negative) for p in load_behavior("builtin:sentiment").pairs[:4]
    ]
    before = weights_fingerprint(lm.model)
    grads = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    conf = lora_config(4, target_modules(lm.model))
    torch.manual_seed(0)
    with LoRA(config=conf, trainable=True).applied(lm) as t:
        cks = train_lora(
            t,
            t.extra["peft_model"],
            pairs,
            objective="sft",
            steps=6,
            lr=2e-3,
            batch=4,
            checkpoints=3,
        )
        assert [c.step for c in cks] == [2, 4, 6]
        assert cks[-1].loss < cks[0].loss  # the running mean of the loss falls
    torch.manual_seed(0)
    with LoRA(config=conf, trainable=True).applied(lm) as t:
        cks = train_lora(
            t,
            t.extra["peft_model"],
            pairs,
            objective="dpo",
            steps=6,
            lr=2e-3,
            batch=4,
            checkpoints=2,
            beta=0.1,
        )
        assert cks[0].loss <= float(np.log(2)) + 1e-4  # starts at log 2 (policy = reference)
        assert cks[-1].loss < cks[0].loss
    assert weights_fingerprint(lm.model) == before
    assert {n: p.requires_grad for n, p in lm.model.named_parameters()} == grads
    assert not any("lora" in n for n, _ in lm.model.named_parameters())


def test_compare_contract_resume_and_report(lm: LoadedModel, tmp_path: Path) -> None:
    beh = load_behavior(_behavior(tmp_path))
    out = tmp_path / "run"
    cfg = CompareConfig(**TINY)
    rep = run_compare(lm, beh, cfg, out)
    assert isinstance(rep, CompareReport)
    text = (out / "compare.json").read_text()
    on_disk = json.loads(text)
    # the file is the report's to_dict(), byte for byte, and reads back to the same file
    assert text == json.dumps(_finite(rep.to_dict()), indent=2, allow_nan=False)
    again_text = json.dumps(CompareReport.from_dict(on_disk).to_dict(), indent=2)
    assert again_text == text
    assert list(on_disk)[-4:] == ["timings", "contrasts", "winners", "random_null"]
    assert list(on_disk["summary"][0]) == SUMMARY_KEYS
    few_row = next(r for r in on_disk["summary"] if r["method"] == "few_shot")
    assert list(few_row) == [*SUMMARY_KEYS, "examples_used"]
    kinds = {c["kind"]: list(c) for c in on_disk["contrasts"]}
    assert kinds["vs unsteered"] == kinds["vs random null"] == CONTRAST_KEYS
    best = [list(c) for c in on_disk["contrasts"] if c["kind"].startswith("best")]
    assert all(k == [*CONTRAST_KEYS[:-1], "view", "p_holm"] for k in best)
    names = {r.method for r in rep.summary}
    contract = {
        "unsteered",
        "mean_diff",
        "pca",
        "random",
        "zero_shot",
        "few_shot",
        "contrast_prompt",
        "lora",
        "dpo",
        "lora+mean_diff",
    }
    assert contract <= names
    for r in rep.summary:
        assert r.n in (1, 2) and 0 <= r.score <= 1 and r.ci[0] <= r.ci[1]
    budget = {r.method: r.budget.candidates for r in rep.summary if r.n == 2}
    assert budget["mean_diff"] == 2 and budget["lora"] == 2 and budget["zero_shot"] == 1
    null = rep.random_null
    assert null is not None and null.n_directions == 3 and len(null.scores) == 3
    assert set(null.percentile) >= {"mean_diff", "unsteered"}
    assert {w.view for w in rep.winners} == {"constrained", "unconstrained"}
    # every method with examples ran at every N and draw; the others once per draw
    per = {(r["method"], r["n"], r["draw"]) for r in rep.runs}
    assert ("lora", 2, 1) in per and ("dpo", 1, 0) in per and ("random", None, 1) in per
    assert len(rep.runs) == 2 * (4 + 2 * 8) - (0 if "system_prompt" in names else 2)
    chosen = [r["chosen"] for r in rep.runs if r["method"] == "mean_diff"]
    assert all(c["coeff"] in (0.25, 0.5) for c in chosen)
    lora_steps = [r["chosen"]["step"] for r in rep.runs if r["method"] == "lora"]
    assert set(lora_steps) <= {1, 2}
    few = [r for r in rep.runs if r["method"] == "few_shot"]
    assert sorted({r["examples_used"] for r in few}) == [1, 2]
    html = (out / "report.html").read_text()
    assert "Who wins at each N" in html and "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html
    assert render_compare_html(on_disk) == render_compare_html(rep)  # one page, either way
    # rerun: everything comes from the journal, nothing is generated again
    again = run_compare(lm, beh, cfg, out)
    assert again.cost["rows_generated"] == 0
    same = [_finite(r.to_dict()) for r in again.summary]
    assert same == [_finite(r.to_dict()) for r in rep.summary]  # NaN-free: NaN != NaN
    # an interrupted run: drop the last journal lines and resume only those
    journal = next((out / "cache").glob("runs-*.jsonl"))
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:-3]) + lines[-3][:10])  # and a torn line
    resumed = run_compare(lm, beh, cfg, out)
    assert resumed.cost["rows_generated"] > 0
    assert [r.method for r in resumed.summary] == [r.method for r in rep.summary]


def test_methods_that_need_pairs_are_skipped_with_a_reason(lm: LoadedModel, tmp_path: Path) -> None:
    p = _behavior(tmp_path, pairs=0)
    data = json.loads(p.read_text())
    del data["pairs"]
    p.write_text(json.dumps(data))
    cfg = CompareConfig(**{**TINY, "methods": "zero_shot,dpo,mean_diff"})
    rep = run_compare(lm, load_behavior(p), cfg, tmp_path / "run")
    assert set(rep.skipped) == {"dpo", "mean_diff"}
    assert "no pairs" in rep.skipped["dpo"]
    assert {r.method for r in rep.summary} == {"unsteered", "zero_shot"}
    assert "Methods not run" in render_compare_html(rep)


def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path: Path) -> None:
    beh = _behavior(tmp_path)
    out = tmp_path / "run"
    cases = [
        ["--train-sizes", "1,8"],  # more than the 4 pairs
        ["--methods", "mean_diff,magic"],
        ["--train-sizes", "two"],
        ["--coeffs", "0.5,x"],
    ]
    for extra in cases:
        r = CliRunner().invoke(
            app, ["compare", "-m", "smollm2-135m", "-b", str(beh), "--out", str(out), "-q", *extra]
        )
        assert r.exit_code == 2, (extra, r.output)
        assert len(r.output.strip().splitlines()) == 1, r.output
        assert not out.exists()
