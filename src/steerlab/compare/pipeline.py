"""``steerlab compare``: steering against prompting and finetuning on the same N examples.

Steps (everything is cached in the run directory; the journal holds one line per finished
method x N x draw, so an interrupted comparison resumes at the next one):

1. the training pool (the behaviour's pairs) and, per draw, a seeded permutation of it: draw
   d's first N pairs are what every method sees at N (nested: its N=4 contain its N=2);
2. one capture pass of every pool pair's positive and negative reply (CAA rendering, last
   token) at the steering layers: every N and draw's vector is a mean over cached rows;
3. per draw, the methods that use no example (unsteered, random, zero-shot, system prompt);
   then per N: steering (strength and layer chosen on the selection split), few-shot and
   contrast prompting, few-shot + steering, LoRA SFT (checkpoint chosen on the selection split)
   and LoRA + steering, DPO;
4. the summary per method and N over test prompts and draws (two-level bootstrap), the
   winner per N where intervals separate, the report.

Every choice (strength, layer, checkpoint) uses the selection prompts and the same rule as
``steerlab sweep``: the best score among candidates whose completions cost the unsteered
model at most ``max_ce_increase`` nats/token more than its own. Test prompts are only scored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..behaviors.behavior import Behavior
from ..behaviors.scorers import make_scorer
from ..capture import capture_stats, resolve_layers
from ..directions.extract import data_hash
from ..engines import bound_engine
from ..errors import DataError
from ..evaluate.engine import continuation_nll_rows, greedy_rows, next_logprobs_rows
from ..evaluate.norms import random_units, residual_norms
from ..evaluate.select import choose, rule_text
from ..interventions.base import NoOp
from ..interventions.lora import LoRA
from ..interventions.per_row import RowSetting
from ..io.prompts import read_prompts
from ..metrics.stats import kl_divergence
from ..metrics.text import distinct_n
from ..models.chat import format_prompt, has_chat_template
from ..models.load import LoadedModel
from ..runs import Run
from . import methods as M
from .config import METHODS, N_FREE, CompareConfig
from .finetune import load_checkpoint, lora_config, target_modules, train_lora
from .summary import summarize_runs, winners

__all__ = ["default_layer", "run_compare"]

Pair3 = tuple[str, str, str]


def default_layer(n_layers: int) -> int:
    """40% of the depth: where single-layer addition steers on the models measured here
    (``steerlab sweep`` chose layer 13 of 30 for sentiment on smollm2-135m)."""
    return max(1, round(0.4 * n_layers))


def _mean(xs: Sequence[float]) -> float:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


class Compare:
    """The state one comparison shares between its steps."""

    def __init__(self, lm: LoadedModel, behavior: Behavior, cfg: CompareConfig, run: Run) -> None:
        self.lm, self.behavior, self.cfg, self.run = lm, behavior, cfg, run
        self.scorer = make_scorer(behavior.scorer, description=behavior.description)
        self.sel = behavior.prompts("selection")[: cfg.selection_prompts]
        self.test = behavior.prompts("test")
        self.neutral = read_prompts("builtin:harmless:val")[: cfg.neutral_prompts]
        self.pool: list[Pair3] = [(p.prompt, p.positive, p.negative) for p in behavior.pairs]
        self.longest = max([*self.sel, *self.test], key=len)
        self._base_neutral: torch.Tensor | None = None
        self.rows = 0
        self.tokens = 0

    # -- measuring -------------------------------------------------------------------------

    def _kl(self, view: LoadedModel, settings: Sequence[RowSetting]) -> list[float]:
        if not self.neutral:
            return [float("nan")] * len(settings)
        if self._base_neutral is None:
            self._base_neutral = next_logprobs_rows(self.lm, self.neutral, chat=self.cfg.chat)
        texts = [p for _ in settings for p in self.neutral]
        rows = [s for s in settings for _ in self.neutral]
        edits = any(s.add or s.ablate for s in settings)
        lp = next_logprobs_rows(
            view, texts, rows if edits else None, chat=self.cfg.chat, batch_rows=self.cfg.batch_rows
        )
        k = len(self.neutral)
        return [
            kl_divergence(self._base_neutral, lp[j * k : (j + 1) * k]) for j in range(len(settings))
        ]

    def measure(
        self,
        view: LoadedModel,
        prompts: Sequence[str],
        settings: Sequence[RowSetting],
        *,
        kl: bool,
    ) -> list[dict[str, Any]]:
        """Per-prompt score, fluency cost (CE of the completion under the *unsteered* model
        given the plain prompt) and repetition of each setting under ``view``."""
        texts = [p for _ in settings for p in prompts]
        rows = [s for s in settings for _ in prompts]
        gen = greedy_rows(
            view,
            texts,
            rows,
            max_new_tokens=self.cfg.max_new_tokens,
            batch_rows=self.cfg.batch_rows,
            chat=self.cfg.chat,
        )
        nll = continuation_nll_rows(self.lm, texts, gen.texts, chat=self.cfg.chat)
        scores = [float(x) for x in self.scorer.score(texts, gen.texts)]
        kls = self._kl(view, settings) if kl else [float("nan")] * len(settings)
        self.rows += len(texts)
        self.tokens += gen.tokens
        n = len(prompts)
        out = []
        for j in range(len(settings)):
            sl = slice(j * n, (j + 1) * n)
            comps = gen.texts[sl]
            out.append(
                {
                    "scores": scores[sl],
                    "ce_per_prompt": [s / m if m else float("nan") for s, m in nll[sl]],
                    "distinct2": _mean([distinct_n(c, 2) for c in comps]),
                    "completions": comps,
                    "kl": kls[j],
                }
            )
        return out


def _record(res: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "score": _mean(res["scores"]),
        "ce": _mean(res["ce_per_prompt"]),
        "distinct2": res["distinct2"],
        "kl": res["kl"],
        "scores": res["scores"],
        "ce_per_prompt": res["ce_per_prompt"],
        "completions": res["completions"],
        **extra,
    }


def _sel_view(res: dict[str, Any]) -> dict[str, float]:
    return {"score": _mean(res["scores"]), "ce": _mean(res["ce_per_prompt"])}


class Work:
    """The units of one comparison (each fills one or more journal items)."""

    def __init__(
        self,
        c: Compare,
        layers: list[int],
        norms: dict[int, float],
        acts: dict[str, torch.Tensor],
        capture_seconds_per_pair: float,
        base_sel: dict[str, float],
    ) -> None:
        self.c, self.layers, self.norms, self.acts = c, layers, norms, acts
        self.cap = capture_seconds_per_pair
        self.base_sel = base_sel

    # steering with a strength (and layer) chosen on the selection split
    def steer(
        self, view: LoadedModel, units: dict[str, dict[int, torch.Tensor]]
    ) -> dict[str, dict[str, Any]]:
        c = self.c
        cands: list[tuple[str, int, float, RowSetting]] = []
        for name, per_layer in units.items():
            for lay in self.layers:
                for coeff in c.cfg.coeffs:
                    delta = per_layer[lay] * (coeff * self.norms[lay])
                    cands.append((name, lay, coeff, RowSetting(add={lay: delta}, label=name)))
        t0 = time.perf_counter()
        sel = c.measure(view, c.sel, [x[3] for x in cands], kl=False)
        t_sel = time.perf_counter() - t0
        chosen: dict[str, Any] = {}
        for name in units:
            cells = [
                {"layer": lay, "coeff": coeff, **_sel_view(r), "_s": s}
                for (nm, lay, coeff, s), r in zip(cands, sel, strict=True)
                if nm == name
            ]
            pick = choose(cells, self.base_sel["ce"], c.cfg.max_ce_increase)
            chosen[name] = {
                "cell": pick["cell"],
                "within_bound": pick["within_bound"],
                "candidates": [{k: v for k, v in x.items() if k != "_s"} for x in cells],
            }
        t0 = time.perf_counter()
        test = c.measure(view, c.test, [chosen[n]["cell"]["_s"] for n in units], kl=True)
        t_test = time.perf_counter() - t0
        out = {}
        for name, r in zip(units, test, strict=True):
            ch = chosen[name]
            out[name] = _record(
                r,
                chosen={
                    "layer": ch["cell"]["layer"],
                    "coeff": ch["cell"]["coeff"],
                    "within_bound": ch["within_bound"],
                    "selection": {k: ch["cell"][k] for k in ("score", "ce")},
                },
                selection=ch["candidates"],
                select_seconds=t_sel / len(units),
                eval_seconds=t_test / len(units),
            )
        return out

    def units_for(self, names: Sequence[str], idx: Sequence[int]) -> dict[str, dict]:
        out: dict[str, dict[int, torch.Tensor]] = {}
        for name in names:
            method = "mean_diff" if name.endswith("mean_diff") else "pca"
            out[name] = {
                lay: M.fit_direction(method, self.acts["pos"][idx, i], self.acts["neg"][idx, i])
                for i, lay in enumerate(self.layers)
            }
        return out

    def plain(self, view: LoadedModel, **extra: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        r = self.c.measure(view, self.c.test, [RowSetting(label="plain")], kl=True)[0]
        return _record(r, eval_seconds=time.perf_counter() - t0, **extra)

    def finetune(
        self, objective: str, pairs: Sequence[Pair3], idx: Sequence[int], seed: int, stack: bool
    ) -> dict[str, dict[str, Any]]:
        """LoRA trained on ``pairs`` (``sft`` or ``dpo``), checkpoint chosen on selection;
        with ``stack``, mean-difference steering added on top (strength chosen again)."""
        c, cfg = self.c, self.c.cfg
        lm = c.lm
        torch.manual_seed(seed)  # the adapter's A matrices
        conf = lora_config(cfg.lora_rank, target_modules(lm.model))
        # a DPO example is two sequences: half as many pairs per step as SFT takes replies, so
        # both objectives process the same number of sequences per step
        batch = cfg.train_batch if objective == "sft" else max(1, cfg.train_batch // 2)
        out: dict[str, dict[str, Any]] = {}
        with LoRA(config=conf, trainable=True).applied(lm) as t:
            pm = t.extra["peft_model"]
            with c.run.bar(f"{objective} on {len(pairs)} pairs", cfg.lora_steps) as adv:
                cks = train_lora(
                    t,
                    pm,
                    pairs,
                    objective=objective,
                    steps=cfg.lora_steps,
                    lr=cfg.lora_lr if objective == "sft" else cfg.dpo_lr,
                    batch=batch,
                    checkpoints=cfg.checkpoints,
                    beta=cfg.dpo_beta,
                    seed=seed,
                    chat=cfg.chat,
                    progress=adv,
                )
            t0 = time.perf_counter()
            cells = []
            for ck in cks:
                load_checkpoint(pm, ck)
                r = c.measure(t, c.sel, [RowSetting(label=f"step {ck.step}")], kl=False)[0]
                cells.append({"step": ck.step, "loss": ck.loss, **_sel_view(r), "_ck": ck})
            pick = choose(cells, self.base_sel["ce"], cfg.max_ce_increase)
            best = pick["cell"]["_ck"]
            load_checkpoint(pm, best)
            t_sel = time.perf_counter() - t0
            name = "lora" if objective == "sft" else "dpo"
            out[name] = self.plain(
                t,
                chosen={
                    "step": best.step,
                    "within_bound": pick["within_bound"],
                    "selection": {k: pick["cell"][k] for k in ("score", "ce")},
                },
                selection=[{k: v for k, v in x.items() if k != "_ck"} for x in cells],
                fit_seconds=best.seconds,
                train_seconds=cks[-1].seconds,
                select_seconds=t_sel,
                hyperparameters={
                    "objective": objective,
                    "rank": cfg.lora_rank,
                    "alpha": 2 * cfg.lora_rank,
                    "target_modules": list(conf.target_modules),
                    "steps": cfg.lora_steps,
                    "batch": min(batch, len(pairs)),
                    "lr": cfg.lora_lr if objective == "sft" else cfg.dpo_lr,
                    **({"beta": cfg.dpo_beta} if objective == "dpo" else {}),
                    "optimizer": "AdamW",
                    "checkpoints": [ck.step for ck in cks],
                },
            )
            if stack:  # the same adapter, still loaded, with steering on top
                r = self.steer(t, self.units_for(["lora+mean_diff"], idx))
                rec = r["lora+mean_diff"]
                rec["fit_seconds"] = best.seconds + self.cap * 2 * len(pairs)
                rec["adapter"] = out[name]["chosen"]
                out["lora+mean_diff"] = rec
        return out


def _draw_order(n_pool: int, seed: int, draw: int) -> list[int]:
    return np.random.default_rng([seed, draw]).permutation(n_pool).tolist()


def _system_reason(lm: LoadedModel, chat: bool | None) -> str | None:
    """Why the system-prompt method cannot run here (None: it can)."""
    tok = lm.tokenizer
    if not (has_chat_template(tok) if chat is None else chat):
        return "the prompts are used without a chat template, so there is no system role"
    marker = "steerlab-system-check"
    try:
        text = format_prompt(tok, "hi", chat=True, system=marker)
    except DataError:
        return "the chat template rejects a system message"
    if marker not in text:
        return "the chat template drops system messages"
    return None


def run_compare(
    lm: LoadedModel,
    behavior: Behavior,
    cfg: CompareConfig,
    out: str | Path,
    *,
    progress: Any = None,
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run a comparison into ``out`` and return the report written as ``compare.json``."""
    from .report import write_compare_report

    behavior.check_splits()
    methods = list(cfg.methods)
    sizes = list(cfg.train_sizes)
    c0 = make_scorer(behavior.scorer, description=behavior.description)  # a missing library: now
    if c0.kind != "text":
        raise DataError(
            f"behavior {behavior.name!r} is scored by {behavior.scorer!r} on items; compare "
            "scores open-ended completions (a text scorer such as sentiment or language:fr)"
        )
    skipped: dict[str, str] = {}
    needs_pairs = [m for m in methods if m not in N_FREE]
    if not behavior.pairs and needs_pairs:
        for m in needs_pairs:
            skipped[m] = (
                "the behaviour has no pairs (prompt, positive reply, negative reply): this method "
                "learns from, or shows, such examples"
            )
    too_big = [n for n in sizes if n > len(behavior.pairs)]
    if too_big and behavior.pairs:
        raise DataError(
            f"--train-sizes {','.join(map(str, too_big))} exceed the {len(behavior.pairs)} pairs "
            f"of behavior {behavior.name!r}"
        )
    if not behavior.description and ("zero_shot" in methods or "system_prompt" in methods):
        for m in ("zero_shot", "system_prompt"):
            if m in methods:
                skipped[m] = "the behaviour has no description to instruct with"
    if "system_prompt" in methods and "system_prompt" not in skipped:
        why = _system_reason(lm, cfg.chat)
        if why:
            skipped["system_prompt"] = why
    methods = [m for m in methods if m not in skipped]
    if bound_engine(lm.model) is not None:
        for m in ("lora", "dpo", "lora+mean_diff"):
            if m in methods:
                skipped[m] = (
                    "an adapter trained in this process cannot be repeated inside vLLM's "
                    "workers; compare it with --engine hf"
                )
        methods = [m for m in methods if m not in skipped]
    try:
        import peft  # noqa: F401
    except ImportError:  # pragma: no cover - peft is a dependency
        for m in ("lora", "dpo", "lora+mean_diff"):
            if m in methods:
                skipped[m] = "peft is not installed"
        methods = [m for m in methods if m not in skipped]

    n_layers = lm.info.n_layers
    layers = resolve_layers(cfg.layers, n_layers) if cfg.layers else [default_layer(n_layers)]
    run = Run(out, kind="compare", lm=lm, progress=progress, status=status)
    say = run.say
    c = Compare(lm, behavior, cfg, run)
    chat_used = has_chat_template(lm.tokenizer) if cfg.chat is None else cfg.chat

    with run.step("capture"):
        pos_t = [format_prompt(lm.tokenizer, p, chat=chat_used) + a for p, a, _ in c.pool]
        neg_t = [format_prompt(lm.tokenizer, p, chat=chat_used) + b for p, _, b in c.pool]
        say(f"capturing {len(c.pool)} pairs at layer(s) {layers}")

        def capture() -> dict[str, torch.Tensor]:
            t0 = time.perf_counter()
            with run.bar("capture", 2 * len(pos_t)) as adv:
                sp = capture_stats(
                    lm.model,
                    lm.tokenizer,
                    lm.adapter,
                    pos_t,
                    layers,
                    keep_samples=True,
                    chat=False,
                    progress=adv,
                )
                sn = capture_stats(
                    lm.model,
                    lm.tokenizer,
                    lm.adapter,
                    neg_t,
                    layers,
                    keep_samples=True,
                    chat=False,
                    progress=adv,
                )
            dt = time.perf_counter() - t0
            return {
                "pos": sp.stacked(),
                "neg": sn.stacked(),
                "seconds": torch.tensor([dt], dtype=torch.float64),
            }

        if c.pool:
            acts = run.cache.tensors("capture", [pos_t, neg_t, layers], capture)
        else:  # nothing to steer with: the methods that need pairs were skipped above
            empty = torch.zeros(0, len(layers), lm.info.d_model)
            acts = {"pos": empty, "neg": empty, "seconds": torch.zeros(1, dtype=torch.float64)}
        per_pair = float(acts["seconds"][0]) / max(len(c.pool), 1)
        norms_raw = run.cache.json(
            "norms",
            [c.sel, layers, cfg.chat],
            lambda: {
                str(k): v for k, v in residual_norms(lm, c.sel, layers, chat=cfg.chat).items()
            },
        )
        norms = {int(k): float(v) for k, v in norms_raw.items()}

    key = [
        {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in vars(cfg).items()
            if k not in ("methods", "train_sizes", "draws")
        },
        data_hash([f"{p}\x00{a}\x00{b}" for p, a, b in c.pool]),
        list(c.sel),
        list(c.test),
        list(c.neutral),
        layers,
        {k: v for k, v in c.scorer.spec().items() if k != "stats"},
    ]
    journal = run.cache.journal("runs", key)
    base_sel = run.cache.json(
        "unsteered-selection",
        key,
        lambda: _sel_view(c.measure(lm, c.sel, [RowSetting(label="unsteered")], kl=False)[0]),
    )
    w = Work(c, layers, norms, acts, per_pair, base_sel)
    width = lm.info.d_model

    def item(m: str, n: int | None, d: int) -> str:
        return f"{m}|{'-' if n is None else n}|{d}"

    def put(m: str, n: int | None, d: int, rec: dict[str, Any], seconds: float) -> None:
        rec = {"method": m, "n": n, "draw": d, "seed": cfg.seed, **rec}
        rec.setdefault("fit_seconds", 0.0)
        journal.put(item(m, n, d), rec, seconds)

    def done(*names: str, n: int | None, d: int) -> bool:
        return all(journal.get(item(m, n, d)) is not None for m in names)

    units = []
    for d in range(cfg.draws):
        units += [("free", None, d)]
        units += [("fit", n, d) for n in sizes]
    n_free = [m for m in methods if m in N_FREE]
    with run.step("methods"), run.bar("compare", len(units)) as advance:
        for kind, n, d in units:
            if kind == "free":
                _free_methods(w, n_free, d, done, put, journal, width, say)
                advance(1)
                continue
            assert n is not None
            order = _draw_order(len(c.pool), cfg.seed, d)
            idx = order[:n]
            pairs = [c.pool[i] for i in idx]
            say(f"draw {d + 1}/{cfg.draws}, N = {n}")
            steer_names = [m for m in ("mean_diff", "pca") if m in methods]
            if steer_names and not done(*steer_names, n=n, d=d):
                t0 = time.perf_counter()
                res = w.steer(lm, w.units_for(steer_names, idx))
                for m in steer_names:
                    res[m]["fit_seconds"] = per_pair * 2 * n  # its share of the capture pass
                    put(m, n, d, res[m], time.perf_counter() - t0)
            for m, make in (("few_shot", M.few_shot), ("contrast_prompt", M.contrast_prompt)):
                stack = m == "few_shot" and "few_shot+mean_diff" in methods
                want = [x for x in (m, "few_shot+mean_diff" if stack else None) if x in methods]
                if not want or done(*want, n=n, d=d):
                    continue
                t0 = time.perf_counter()
                treat, used = make(lm, pairs, cfg.max_context, c.longest)
                fit = time.perf_counter() - t0
                with treat.applied(lm) as view:
                    if m in methods and not done(m, n=n, d=d):
                        rec = w.plain(
                            view,
                            fit_seconds=fit,
                            examples_used=used,
                            treatment=treat.spec() | {"shots": used},
                        )
                        put(m, n, d, rec, time.perf_counter() - t0)
                    if stack and not done("few_shot+mean_diff", n=n, d=d):
                        t1 = time.perf_counter()
                        r = w.steer(view, w.units_for(["few_shot+mean_diff"], idx))
                        rec = r["few_shot+mean_diff"]
                        rec["fit_seconds"] = fit + per_pair * 2 * n
                        rec["examples_used"] = used
                        put("few_shot+mean_diff", n, d, rec, time.perf_counter() - t1)
            seed = cfg.seed * 1_000_003 + d * 1009 + n
            want = [x for x in ("lora", "lora+mean_diff") if x in methods]
            if want and not done(*want, n=n, d=d):
                t0 = time.perf_counter()
                res = w.finetune("sft", pairs, idx, seed, stack="lora+mean_diff" in methods)
                for m in want:
                    put(m, n, d, res[m], time.perf_counter() - t0)
            if "dpo" in methods and not done("dpo", n=n, d=d):
                t0 = time.perf_counter()
                res = w.finetune("dpo", pairs, idx, seed + 7, stack=False)
                put("dpo", n, d, res["dpo"], time.perf_counter() - t0)
            advance(1)

    runs = [journal.items[k] for k in sorted(journal.items)]
    runs = [r for r in runs if r["method"] in methods and (r["n"] in sizes or r["n"] is None)]
    runs = [r for r in runs if r["draw"] < cfg.draws]
    summary = summarize_runs(runs, methods, sizes, seed=cfg.seed)
    report = _report(lm, behavior, cfg, c, layers, norms, base_sel, runs, summary, skipped, run)
    run.write_json("compare.json", report)
    write_compare_report(run, report)
    return report


def _free_methods(
    w: Work,
    names: Sequence[str],
    d: int,
    done: Callable[..., bool],
    put: Callable[..., None],
    journal: Any,
    width: int,
    say: Callable[[str], None],
) -> None:
    """Methods that use no training example. ``unsteered``, ``zero_shot`` and
    ``system_prompt`` are deterministic: draw 0's measurement stands for every draw."""
    c = w.c
    lm = c.lm
    desc = c.behavior.description or ""
    makers = {
        "unsteered": lambda: NoOp(),
        "zero_shot": lambda: M.zero_shot(desc),
        "system_prompt": lambda: M.system_prompt(desc),
    }
    for m in names:
        if done(m, n=None, d=d):
            continue
        t0 = time.perf_counter()
        if m == "random":
            units = random_units(width, w.layers, c.cfg.seed * 1000 + d + 1)
            rec = w.steer(lm, {"random": units})["random"]
        elif d > 0 and journal.get(f"{m}|-|0") is not None:
            rec = dict(journal.get(f"{m}|-|0"))
            rec["copied_from_draw"] = 0
        else:
            treat = makers[m]()
            with treat.applied(lm) as view:
                rec = w.plain(view, treatment=treat.spec())
        for k in ("method", "n", "draw", "seed"):
            rec.pop(k, None)
        put(m, None, d, rec, time.perf_counter() - t0)
    say(f"draw {d + 1}: baselines without examples done")


def _report(
    lm: LoadedModel,
    behavior: Behavior,
    cfg: CompareConfig,
    c: Compare,
    layers: list[int],
    norms: dict[int, float],
    base_sel: dict[str, float],
    runs: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    skipped: dict[str, str],
    run: Run,
) -> dict[str, Any]:
    sizes = list(cfg.train_sizes)
    big = max(sizes)
    examples: dict[str, list[dict[str, str]]] = {}
    for m in cfg.methods:
        r = next(
            (x for x in runs if x["method"] == m and x["draw"] == 0 and x["n"] in (big, None)),
            None,
        )
        if r:
            examples[m] = [
                {"prompt": p, "completion": t, "score": s}
                for p, t, s in zip(c.test, r["completions"], r["scores"], strict=False)
            ][:4]
    return {
        "kind": "compare",
        "steerlab_version": __version__,
        "model": lm.info.to_dict(),
        "behavior": behavior.to_dict(),
        "scorer": c.scorer.spec(),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        "methods": [m for m in METHODS if m in cfg.methods and m not in skipped],
        "skipped": skipped,
        "train_sizes": sizes,
        "layers": layers,
        "norms": {str(k): v for k, v in norms.items()},
        "pool": {"pairs": len(c.pool), "draw_rule": "seeded permutation per draw; N = its first N"},
        "splits": {"selection": len(c.sel), "test": len(c.test), "neutral": len(c.neutral)},
        "rule": rule_text(cfg.max_ce_increase),
        "unsteered_selection": base_sel,
        "summary": summary,
        "winners": winners(summary, sizes),
        "runs": [{k: v for k, v in r.items() if k != "completions"} for r in runs],
        "examples": examples,
        "cost": {"rows_generated": c.rows, "tokens_generated": c.tokens},
        "timings": run.timing_report(),
    }
