"""``steerlab discover``: MELBO vectors beside a random control, with completions and a report.

1. **Radius** (``"auto"``): short runs on a log grid of R scaled to the median norm of
   ``resid_pre[S]``, judged by ``report.RADIUS_RULE`` (recorded in the report).
2. **Training** (Mack & Turner 2024) in chunks of ``chunk_size`` vectors, each journaled in
   ``OUT/cache``: a rerun trains only the missing chunks. Vector k starts from seed ``seed + k``
   and vectors of one batched run do not interact, so chunks equal the batched run up to float
   rounding. Orthogonal vectors are coupled: one chunk, retrained after an interrupt.
3. **Control**: K random vectors of the same norm (seeds ``seed + 1_000_000 + j``).
4. **Completions**, greedy, unsteered and with each vector at +1 and -1, several vectors per
   ``generate`` batch (:class:`~steerlab.interventions.SteerRows`, pinned equal to ``steer``);
   journaled per batch.
5. **Metrics** and clusters (:mod:`.report`); ``vectors.safetensors``, one Direction per learned
   vector in ``vectors/vec_{k}.safetensors`` (for ``steerlab generate --vector``),
   ``completions.json``, ``report.json``, ``report.html``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .._version import __version__
from ..errors import DataError, SteerlabError, VectorError
from ..evaluate.norms import residual_norms
from ..generation import generate
from ..interventions import SteerRows
from ..metrics import continuation_loss
from ..models.chat import has_chat_template
from ..models.load import LoadedModel
from ..runs import Bar, Journal, Run, RunCache
from . import report as rpt
from .config import DiscoverConfig, MelboConfig
from .findings import DiscoverReport, Radius, VectorRow
from .result import MelboResult, save_vectors, vector_direction
from .sphere import gram_schmidt, random_vectors
from .train import train_melbo

__all__ = ["DiscoverConfig", "run_discover", "source_norm"]

CONTROL_SEED_OFFSET = 1_000_000
SWEEP_PROMPTS, SWEEP_NEW_TOKENS = 8, 16
Item = tuple[str, int, int]  # (kind, vector index, sign)


def _check(lm: LoadedModel, prompts: Sequence[str], cfg: DiscoverConfig) -> MelboConfig:
    """Validate everything before anything is computed or written; the resolved MELBO config."""
    if not prompts:
        raise DataError("give at least one prompt (--prompt or --prompts)")
    if any(not str(p).strip() for p in prompts):
        raise DataError("the prompt set contains an empty prompt")
    r = cfg.radius
    if isinstance(r, str) and r != "auto":
        raise SteerlabError(f"radius must be a number > 0 or 'auto', got {r!r}")
    if not isinstance(r, str) and not (math.isfinite(float(r)) and float(r) > 0):
        raise VectorError(f"radius must be a finite number > 0, got {r}")
    for name in ("max_new_tokens", "batch_size", "chunk_size", "sweep_vectors"):
        if getattr(cfg, name) < 1:
            raise SteerlabError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    ok = all(0 < f < math.inf for f in cfg.sweep_factors) and 0 <= cfg.fluency_margin < math.inf
    if not (cfg.sweep_factors and ok and (cfg.sweep_steps or 0) >= 0):
        raise SteerlabError("need sweep_factors > 0, fluency_margin >= 0 and sweep_steps >= 0")
    if cfg.melbo.chat and not has_chat_template(lm.tokenizer):
        raise DataError("this model has no chat template: drop chat=True (--no-chat)")
    placeholder = 1.0 if isinstance(r, str) else float(r)
    return replace(cfg.melbo, radius=placeholder).resolved(lm.info.n_layers, lm.info.d_model)


def source_norm(lm: LoadedModel, prompts: Sequence[str], layer: int, chat: bool | None) -> float:
    """Median ``||resid_pre[layer]||`` by the rule every strength is scaled by
    (:func:`~steerlab.evaluate.norms.residual_norms`: the attention-sink first token left out)."""
    return residual_norms(lm, prompts, [layer], chat=chat)[layer]


@dataclass
class _Gen:
    """How completions are made: one model, one steering layer, greedy."""

    lm: LoadedModel
    layer: int
    chat: bool | None
    batch_size: int
    new_tokens: int

    def key(self) -> list[Any]:
        template = getattr(self.lm.tokenizer, "chat_template", None)
        return [self.lm.info.to_dict(), template, self.layer, self.chat, self.batch_size]

    def texts(self, prompts: list[str], rows: torch.Tensor, bs: int) -> list[str]:
        kw = {"max_new_tokens": self.new_tokens, "batch_size": bs, "chat": self.chat}
        with SteerRows(rows, self.layer).applied(self.lm) as m:
            return list(generate(m.model, m.tokenizer, prompts, **kw))

    def loss(self, prompts: list[str], texts: list[str]) -> float | None:
        """Mean nats/token of ``texts`` under the unsteered model; None if all are empty."""
        tok = self.lm.tokenizer
        if not any(tok.encode(t, add_special_tokens=False) for t in texts):
            return None
        bs = self.batch_size
        return continuation_loss(self.lm.model, tok, prompts, texts, chat=self.chat, batch_size=bs)

    def measure(
        self,
        prompts: list[str],
        vecs: dict[str, torch.Tensor],
        journal: Journal | None,
        advance: Callable[[int], None],
    ) -> tuple[dict[str, Any], dict[Item, dict[str, Any]]]:
        """Unsteered completions (a zero vector: ``h + 0 == h``, same batches) and, for every
        (kind, k, sign), ``{"texts", "loss"}`` (loss under the unsteered model)."""
        items: list[Item] = [("unsteered", 0, 1)]
        items += [(kd, k, s) for kd, v in vecs.items() for k in range(len(v)) for s in (1, -1)]
        vecs = {"unsteered": torch.zeros(1, self.lm.info.d_model), **vecs}
        done: dict[str, Any] = {}
        if journal is not None:  # get() counts what a resumed run reuses
            done = {i: v for it in items if (v := journal.get(i := _iid(it))) is not None}
        todo = [it for it in items if _iid(it) not in done]
        advance(len(items) - len(todo))
        n = len(prompts)
        group = max(1, self.batch_size // n)
        for g in range(0, len(todo), group):
            part = todo[g : g + group]
            t0 = time.perf_counter()
            deltas = torch.stack([s * vecs[kind][k] for kind, k, s in part])  # (G, D)
            if len(part) > 1:  # one generate batch of G * n rows, vector j on rows j*n..
                rows, bs = deltas.repeat_interleave(n, 0), n * len(part)
                texts = self.texts(prompts * len(part), rows, bs)
            else:
                texts = self.texts(prompts, deltas, self.batch_size)
            seconds = (time.perf_counter() - t0) / len(part)
            for j, it in enumerate(part):
                value = {"texts": texts[j * n : (j + 1) * n]}
                value["loss"] = self.loss(prompts, value["texts"])
                done[_iid(it)] = value
                if journal is not None:
                    journal.put(_iid(it), value, seconds)
            advance(len(part))
        return done[_iid(items[0])], {it: done[_iid(it)] for it in items[1:]}


def _iid(it: Item) -> str:
    return f"{it[0]}/{it[1]}/{it[2]:+d}"


def _controls(d: int, k: int, radius: float, seed: int, orthogonal: bool) -> torch.Tensor:
    v = random_vectors(d, k, radius, seed)
    return gram_schmidt(v, radius) if orthogonal else v


def _train(
    lm: LoadedModel, prompts: list[str], mcfg: MelboConfig, chunk: int, cache: RunCache, bar: Bar
) -> MelboResult:
    """Train in resumable chunks; all chunks as one :class:`MelboResult`."""
    cfg = mcfg.resolved(lm.info.n_layers, lm.info.d_model)
    k_all = cfg.num_vectors
    size = k_all if cfg.orthogonal else chunk
    coupled = {} if cfg.orthogonal else {"num_vectors": None}  # chunks do not depend on K
    template = getattr(lm.tokenizer, "chat_template", None)
    key = [lm.info.to_dict(), template, prompts, cfg.to_dict() | coupled]
    journal = cache.journal("melbo-train", key)
    parts = []
    with bar("training vectors", k_all * cfg.steps) as adv:
        for start in range(0, k_all, size):
            n = min(size, k_all - start)
            rec = journal.get(f"{start}+{n}")
            if rec is None:
                t0 = time.perf_counter()
                sub = replace(cfg, num_vectors=n, seed=cfg.seed + start)
                res = train_melbo(lm, prompts, sub, progress=lambda _s, n=n: adv(n))
                failed = {
                    str(start + i): m.replace(f"vector {i}:", f"vector {start + i}:", 1)
                    for i, m in res.failed.items()
                }
                # float32 -> JSON -> float32 is exact, so resumed vectors are bit-identical
                rec = {k: getattr(res, k).tolist() for k in ("vectors", "losses", "history")}
                rec |= {"failed": failed, "meta": res.meta}
                journal.put(f"{start}+{n}", rec, time.perf_counter() - t0)
            else:
                adv(n * cfg.steps)
            parts.append(rec)
    rows = max(len(p["history"]) for p in parts)  # a chunk whose vectors all failed stops early
    hist = [torch.tensor(p["history"]).double().view(-1, len(p["losses"])) for p in parts]
    hist = [torch.cat([h, h.new_full((rows - len(h), h.shape[1]), math.nan)]) for h in hist]
    return MelboResult(
        vectors=torch.tensor([v for p in parts for v in p["vectors"]], dtype=torch.float32),
        losses=torch.tensor([x for p in parts for x in p["losses"]], dtype=torch.float64),
        history=torch.cat(hist, 1),
        config=cfg,
        failed={int(i): m for p in parts for i, m in p["failed"].items()},
        meta=parts[0]["meta"],
    )


def _sweep(
    gen: _Gen, prompts: list[str], base: MelboConfig, cfg: DiscoverConfig, cache: RunCache, bar: Bar
) -> Radius:
    """Short runs on the radius grid: the chosen radius, the rule and every grid point."""
    lm, sp, seed_c = gen.lm, prompts[:SWEEP_PROMPTS], base.seed + CONTROL_SEED_OFFSET
    # cached: CPU matmuls differ in the last bits between runs; the rule in the key, so a run
    # cached when the first token still counted is measured again
    nkey = [gen.key(), sp, "first token left out"]
    norm = cache.json("source-norm", nkey, lambda: source_norm(lm, sp, gen.layer, gen.chat))
    factors = sorted({float(f) for f in cfg.sweep_factors})
    grid = [f * norm for f in factors]
    kv = min(cfg.sweep_vectors, base.num_vectors)
    steps = cfg.sweep_steps if cfg.sweep_steps is not None else max(1, base.steps // 4)
    layers = {"source_layer": base.source_layer, "target_layer": base.target_layer}
    user = replace(cfg.melbo, num_vectors=kv, steps=steps, chat=base.chat, **layers)
    # the rule's text in the key: points hold its metrics, so a new rule re-measures them
    key = [gen.key(), sp, user.to_dict(), factors, norm, rpt.RADIUS_RULE]
    journal = cache.journal("radius-sweep", key)
    points = []
    with bar("radius sweep", len(grid)) as adv:
        for r in grid:
            point = journal.get(repr(r))
            if point is None:
                t0 = time.perf_counter()
                res = train_melbo(lm, sp, replace(user, radius=r))
                vecs = {"learned": res.vectors}
                vecs["random"] = _controls(lm.info.d_model, kv, r, seed_c, user.orthogonal)
                ref, out = gen.measure(sp, vecs, None, lambda _n: None)
                entries = rpt.describe(lm.tokenizer, sp, ref, out, vecs)
                point = {"radius": r, "factor": r / norm, "failed": len(res.failed)}
                summary = {k: g.to_dict() for k, g in rpt.summarize(entries).items()}
                point |= {"unsteered_loss": ref["loss"], **summary}
                journal.put(repr(r), point, time.perf_counter() - t0)
            points.append(point)
            adv(1)
    base_loss = points[0]["unsteered_loss"]
    chosen, note = rpt.choose_radius(points, base_loss, cfg.fluency_margin)
    return Radius(
        "auto",
        points[chosen]["radius"],
        chosen_index=chosen,
        fluency_margin=cfg.fluency_margin,
        median_source_norm=norm,
        sweep_vectors=kv,
        sweep_steps=steps,
        sweep_prompts=len(sp),
        sweep_new_tokens=SWEEP_NEW_TOKENS,
        unsteered_loss=base_loss,
        rule=rpt.RADIUS_RULE,
        sweep=points,
        note=note,
    )


def _radius(
    run: Run, lm: LoadedModel, prompts: list[str], base: MelboConfig, cfg: DiscoverConfig
) -> Radius:
    """The radius R: ``cfg.radius``, or chosen by a short sweep (``"auto"``, its own step)."""
    if cfg.radius != "auto":
        return Radius("fixed", float(cfg.radius))
    assert base.source_layer is not None
    with run.step("radius_sweep"):
        sweep_gen = _Gen(lm, base.source_layer, base.chat, cfg.batch_size, SWEEP_NEW_TOKENS)
        radius = _sweep(sweep_gen, prompts, base, cfg, run.cache, run.bar)
    run.say(
        f"radius auto: R = {radius.value:.4g} (median |resid_pre[S]| "
        f"{radius.median_source_norm:.4g})"
    )
    return radius


def run_discover(
    lm: LoadedModel,
    prompts: Sequence[str],
    out_dir: str | os.PathLike[str],
    cfg: DiscoverConfig | None = None,
    *,
    progress: Bar | None = None,
    status: Callable[[str], None] | None = None,
) -> DiscoverReport:
    """Find MELBO vectors, compare them with random ones; write vectors, completions, report.

    Bad settings raise :class:`~steerlab.errors.SteerlabError` before anything is written; the
    same call again resumes from ``OUT/cache``.

    Args:
        lm: from :func:`steerlab.load_model`.
        prompts: instructions (chat template applied when the model has one).
        out_dir: run directory.
        cfg: settings (see :class:`DiscoverConfig`).
        progress: ``progress(description, total)`` -> context manager yielding ``advance(n)``,
            e.g. :func:`steerlab.ui.progress_bar`; ``status``: called with one-line messages.

    Returns:
        The report; its ``to_dict()`` is ``report.json``.

    Example:
        >>> lm = steerlab.load_model("smollm2-135m")  # doctest: +SKIP
        >>> rep = run_discover(lm, ["Tell me a story."], "runs/discover")  # doctest: +SKIP
    """
    cfg = cfg or DiscoverConfig()
    prompts = [str(p) for p in prompts]
    base = _check(lm, prompts, cfg)
    assert base.source_layer is not None
    run = Run(out_dir, kind="discover", lm=lm, progress=progress, status=status)
    cache, bar = run.cache, run.bar
    seed_c = base.seed + CONTROL_SEED_OFFSET
    radius = _radius(run, lm, prompts, base, cfg)
    assert radius.value is not None
    r = float(radius.value)
    layers = {"source_layer": base.source_layer, "target_layer": base.target_layer}
    with run.step("train"):
        mcfg = replace(cfg.melbo, radius=r, **layers)
        result = _train(lm, prompts, mcfg, cfg.chunk_size, cache, bar)
    k_all = result.num_vectors
    vecs = {"learned": result.vectors}
    vecs["random"] = _controls(lm.info.d_model, k_all, r, seed_c, base.orthogonal)
    with run.step("generate"):
        gen = _Gen(lm, base.source_layer, base.chat, cfg.batch_size, cfg.max_new_tokens)
        key = [gen.key(), gen.new_tokens, prompts, [v.tolist() for v in vecs.values()]]
        journal = cache.journal("completions", key)
        with bar("completions", 1 + 4 * k_all) as adv:
            ref, done = gen.measure(prompts, vecs, journal, adv)
    with run.step("metrics"):
        entries = rpt.describe(lm.tokenizer, prompts, ref, done, vecs, result)
        clusters = rpt.cluster_entries(entries)
    _write_vectors(run, result, lm)
    notes = [radius.note] if radius.note else []
    notes += [f"vector {k} failed: {m}" for k, m in sorted(result.failed.items())]
    report = DiscoverReport(
        model=lm.info.to_dict(),
        identity=run.identity,
        steerlab_version=__version__,
        config={**cfg.to_dict(), "melbo": result.config.to_dict(), "control_seed": seed_c},
        n_prompts=len(prompts),
        radius=radius,
        unsteered_loss=ref["loss"],
        summary=rpt.summarize(entries),
        vectors=[VectorRow.from_dict(e) for e in entries],  # without their completions
        clusters=clusters,
        notes=notes,
        **_timings(run),
    )
    base_texts = [{"prompt": p, "text": t} for p, t in zip(prompts, ref["texts"], strict=True)]
    completions = dict(model=lm.info.model_id, radius=r, unsteered=base_texts, vectors=entries)
    _write_report(run, report, completions)
    return report


def _write_report(run: Run, report: DiscoverReport, completions: dict[str, Any]) -> None:
    """``completions.json``, ``report.json`` and the page."""
    from .page import discover_files  # matplotlib and the templates load only here

    run.write_json("completions.json", completions, indent=1)
    run.write_json("report.json", report.to_dict(), indent=1)
    run.write_files(discover_files(report, completions))


def _write_vectors(run: Run, result: MelboResult, lm: LoadedModel) -> None:
    """``vectors.safetensors`` and one Direction per learned vector in ``vectors/``."""
    save_vectors(result, run.path("vectors.safetensors"), lm)
    run.path("vectors").mkdir(exist_ok=True)
    for old in run.path("vectors").glob("vec_*.safetensors"):  # from an earlier run with more K
        old.unlink()
    for k in range(result.num_vectors):
        vector_direction(result, k).save(run.path("vectors") / f"vec_{k}.safetensors")


def _timings(run: Run) -> dict[str, Any]:
    timing = run.timing_report()
    return {
        "timings": timing["seconds"],
        "compute_seconds": timing["compute_seconds"],
        "resumed_steps": timing["resumed_steps"],
    }
