"""``steerlab refusal``: find, test and export the refusal direction, resumably.

Steps (each cached under ``OUT/cache``; a rerun with the same config reuses them):
filter -> candidates -> baseline val scores -> selection -> coefficient -> evaluation ->
direction artifact -> export (optional) -> report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..directions.artifact import LAYER_CONVENTION, Direction
from ..errors import DataError, SteerlabError
from ..evaluate.refusal import last_token_logprobs, refusal_scores, refusal_token_ids
from ..interventions import orthogonalize
from ..models.chat import has_chat_template
from ..models.load import LoadedModel
from ..runcache import RunCache, key_of
from .config import RefusalConfig
from .data import MIN_SET, load_data
from .evaluate import GENERATED_ON, Intervention, evaluate_variants
from .export import export_model
from .select import candidate_means, post_instruction_tokens, score_candidates, select
from .summary import build_report, choose_coeff, write_report

__all__ = ["Hooks", "run_refusal"]

# progress(step_description, total) -> advance(n); status(message)
Hooks = tuple[Callable[[str, int], Any], Callable[[str], None]]


def _noop_bar(_d: str, _t: int) -> Any:
    @contextmanager
    def bar() -> Iterator[Callable[[int], None]]:
        yield lambda _n: None

    return bar()


def run_refusal(
    lm: LoadedModel,
    cfg: RefusalConfig,
    out_dir: Path,
    *,
    export_dir: Path | None = None,
    overwrite: bool = False,
    progress: Callable[[str, int], Any] | None = None,
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole pipeline and write ``direction.safetensors``, ``report.json`` and
    ``report.html`` into ``out_dir``. Returns the report dict."""
    bar = progress or _noop_bar
    say = status or (lambda _m: None)
    if export_dir is not None and export_dir.exists() and not overwrite:
        raise SteerlabError(f"export dir {export_dir} exists; pass --overwrite to replace it")
    if cfg.chat is not False and not has_chat_template(lm.tokenizer):
        raise DataError(
            "this model has no chat template: pass --template FILE (a Jinja chat "
            "template) or --no-chat to use raw prompts"
        )
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    @contextmanager
    def timed(step: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        timings[step] = round(time.perf_counter() - t, 2)

    out_dir.mkdir(parents=True, exist_ok=True)
    cache = RunCache(out_dir / "cache")
    model_key = {
        "model": lm.info.to_dict(),
        "chat": cfg.chat,
        "template": getattr(lm.tokenizer, "chat_template", None),
    }
    ids = refusal_token_ids(lm.tokenizer)
    with timed("data"):
        data = load_data(cfg, lm.tokenizer)
    bs = cfg.batch_size

    def scores_of(prompts: list[str], label: str) -> list[float]:
        return filter_stats(prompts, label)["scores"]

    def filter_stats(prompts: list[str], label: str) -> dict[str, list[Any]]:
        with bar(label, len(prompts)) as adv:
            lp = last_token_logprobs(
                lm.model, lm.tokenizer, prompts, batch_size=bs, chat=cfg.chat, progress=adv
            )
        top = lp.argmax(-1)
        return {
            "scores": refusal_scores(lp, ids).tolist(),
            "argmax_refusal": [int(t) in set(ids) for t in top.tolist()],
        }

    # 1. Filter: keep harmful prompts the model refuses and harmless ones it answers.
    with timed("filter"):
        filt = cache.json(
            "filter-v2",
            [model_key, data.harmful, data.harmless, ids],
            lambda: {
                "harmful": filter_stats(data.harmful, "filter: harmful train"),
                "harmless": filter_stats(data.harmless, "filter: harmless train"),
            },
        )
    on = cfg.filter_train
    if cfg.filter_rule == "argmax":  # the greedy first token opens a refusal (or does not)
        keep_h = filt["harmful"]["argmax_refusal"]
        keep_l = [not r for r in filt["harmless"]["argmax_refusal"]]
    else:  # the paper's rule: refusal score > 0 (harmful) / < 0 (harmless)
        keep_h = [x > 0 for x in filt["harmful"]["scores"]]
        keep_l = [x < 0 for x in filt["harmless"]["scores"]]
    harmful = [p for p, k_ in zip(data.harmful, keep_h, strict=True) if k_ or not on]
    harmless = [p for p, k_ in zip(data.harmless, keep_l, strict=True) if k_ or not on]
    filter_counts = {
        "harmful_kept": len(harmful),
        "harmful_total": len(data.harmful),
        "harmless_kept": len(harmless),
        "harmless_total": len(data.harmless),
    }
    if len(harmful) < MIN_SET or len(harmless) < MIN_SET:
        raise DataError(
            f"after filtering, {len(harmful)} harmful prompt(s) are refused and {len(harmless)} "
            f"harmless ones answered (need {MIN_SET} each): this model may not refuse (try "
            "qwen2.5-coder-0.5b) or the sets are too small"
        )
    say(
        f"filter: {len(harmful)}/{len(data.harmful)} harmful refused, "
        f"{len(harmless)}/{len(data.harmless)} harmless answered"
    )

    # 2. Candidate directions at every layer and the last K post-instruction positions.
    n_post = post_instruction_tokens(lm, cfg.chat)
    k = min(cfg.positions or min(n_post, 5), n_post)
    with timed("candidates"):

        def compute_means() -> dict[str, torch.Tensor]:
            with bar("candidates: activations", len(harmful) + len(harmless)) as adv:
                mh = candidate_means(lm, harmful, k, batch_size=bs, chat=cfg.chat, progress=adv)
                ml = candidate_means(lm, harmless, k, batch_size=bs, chat=cfg.chat, progress=adv)
            return {"harmful": mh, "harmless": ml}

        means = cache.tensors("candidates", [model_key, harmful, harmless, k], compute_means)
    diffs = means["harmful"] - means["harmless"]  # (L, K, D)

    # 3. Selection on validation data.
    with timed("selection"):
        base_key = [model_key, data.harmless_val]
        base_hl = cache.tensors(
            "baseline_val",
            base_key,
            lambda: {
                "lp": last_token_logprobs(
                    lm.model, lm.tokenizer, data.harmless_val, batch_size=bs, chat=cfg.chat
                )
            },
        )["lp"]
        base_h_scores = cache.json(
            "baseline_val_harmful",
            [model_key, data.harmful_val, ids],
            lambda: scores_of(data.harmful_val, "baseline: harmful val"),
        )
        sel_key = [
            model_key,
            harmful,
            harmless,
            k,
            data.harmful_val,
            data.harmless_val,
            ids,
            cfg.prune_last,
            cfg.early_prompts,
            cfg.keep,
            cfg.induce_coeff,
            cfg.screen,
        ]
        journal = cache.journal("selection-v2", sel_key)
        n_layers = sum(
            1 for lay in range(diffs.shape[0]) if lay < int(diffs.shape[0] * (1 - cfg.prune_last))
        )
        n_screen = (
            n_layers + min(cfg.keep, n_layers) * (k - 1)
            if cfg.screen == "layers" and k > 1
            else n_layers * k
        )
        with bar("selection: scoring candidates", n_screen + cfg.keep) as adv:
            cands = score_candidates(
                lm,
                diffs,
                data.harmful_val,
                data.harmless_val,
                ids,
                cfg,
                journal,
                base_harmless_lp=base_hl,
                progress=adv,
            )
        best, notes = select(cands, cfg)
    layer, pos = best["layer"], best["position"]
    vec = diffs[layer, pos + k].float()
    say(
        f"selected layer {layer}, position {pos}: bypass {best['bypass_score']:.2f}, "
        f"induce {best['induce_score']:.2f}, KL {best['kl_score']:.3f}"
    )

    # 4. Addition coefficient, chosen on harmless val (never on evaluation data).
    with timed("coefficient"):
        coeff, coeff_scan = choose_coeff(
            lm, vec, layer, data.harmless_val, ids, cfg, cache, [sel_key, layer, pos], bar
        )
    r = vec / vec.norm()
    clamp_value = float(means["harmful"][layer, pos + k].float() @ r)
    gen = torch.Generator().manual_seed(cfg.seed)
    rand = torch.randn(vec.shape[0], generator=gen)
    rand = rand / rand.norm() * vec.norm()

    # 5. Evaluation on held-out prompts.
    with timed("orthogonalize"):
        edited = orthogonalize(lm.model, vec, adapter=lm.adapter)
    iv = Intervention(lm, vec, layer, coeff, clamp_value, rand, edited)
    n_gen = sum(
        len(data.eval_harmful if w == "harmful" else data.eval_harmless)
        for sets in GENERATED_ON.values()
        for w in sets
    )
    with timed("evaluation"):
        ev_journal = cache.journal(
            "evaluation-v2",
            [
                sel_key,
                layer,
                pos,
                coeff,
                cfg.max_new_tokens,
                data.eval_harmful,
                data.eval_harmless,
                cfg.seed,
            ],
        )
        # The unsteered model's results do not depend on the direction: kept apart so that a
        # rerun with another selection rule reuses them.
        base_journal = cache.journal(
            "evaluation-baseline",
            [model_key, ids, cfg.max_new_tokens, data.eval_harmful, data.eval_harmless, cfg.seed],
        )
        with bar("evaluation: generating", n_gen) as adv:
            metrics, completions = evaluate_variants(
                iv,
                data.eval_harmful,
                data.eval_harmless,
                ids,
                cfg,
                ev_journal,
                baseline_journal=base_journal,
                progress=lambda _label, n: adv(n),
            )

    direction = Direction(
        vec.unsqueeze(0),
        (layer,),
        {
            "model": lm.info.to_dict(),
            "site": "resid_pre",
            "method": "mean_diff",
            "position": pos,
            "layer_convention": LAYER_CONVENTION,
            "kind_of_direction": "refusal",
            "data_hash": key_of([harmful, harmless]),
            "counts": {"positive": len(harmful), "negative": len(harmless)},
            "selection": {kk: best[kk] for kk in ("bypass_score", "induce_score", "kl_score")},
            "coeff": coeff,
            "clamp_value": clamp_value,
            "steerlab_version": __version__,
        },
    )
    direction.save(out_dir / "direction.safetensors")

    exported = None
    if export_dir is not None:
        with timed("export"):
            exported = export_model(
                lm,
                edited,
                vec,
                export_dir,
                metrics,
                best,
                cfg,
                overwrite=overwrite,
                prompts=data.eval_harmless[:2],
            )
    del edited
    timings["total"] = round(time.perf_counter() - t_all, 2)
    report = build_report(
        lm,
        cfg,
        best,
        cands,
        metrics,
        completions,
        data,
        filter_counts,
        timings,
        notes + data.notes,
        coeff,
        coeff_scan,
        clamp_value,
        base_h_scores,
        base_hl,
        ids,
        exported,
        k,
        cache.hits,
    )
    write_report(report, out_dir)
    return report
