"""``steerlab refusal``: find, test and export the refusal direction, resumably.

Steps (:mod:`.steps`; each cached under ``OUT/cache``, a rerun with the same config reuses
them): data -> filter -> candidates -> selection -> coefficient -> direction artifact ->
export check (optional, before the long part) -> evaluation -> export -> report.

A step that fails after the data is read still leaves ``report.json`` / ``report.html`` stating
which step failed and why; an export whose check fails is not published, the evaluation goes
on, the report says so, and the run ends with an error.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DataError, SteerlabError
from ..metrics import refusal_token_ids
from ..models.chat import has_chat_template
from ..models.load import LoadedModel
from ..runs import Bar, Run, check_new_dir
from .config import RefusalConfig
from .data import RefusalData, load_data
from .export import ExportCheck, prepare_export, publish_export
from .outcome import Evaluation, coefficient, direction_artifact, evaluation
from .result import Failure, RefusalReport
from .steps import Ctx, Selection, candidates, filter_prompts, selection
from .summary import build_report, model_card

__all__ = ["run_refusal"]

EXPORT_CHECK_PROMPTS = 2  # per set (harmful, harmless), one prompt per forward


def _write(run: Run, report: RefusalReport) -> None:
    from .report import refusal_files  # matplotlib and the templates load only here

    run.write_json("report.json", report.to_dict())
    run.write_files(refusal_files(report))


def _check_inputs(
    lm: LoadedModel, cfg: RefusalConfig, out: Path, export_dir: Path | None, overwrite: bool
) -> None:
    """Refuse a bad setup before anything is written."""
    if cfg.chat is not False and not has_chat_template(lm.tokenizer):
        raise DataError(
            "this model has no chat template: pass --template FILE (a Jinja chat "
            "template) or --no-chat to use raw prompts"
        )
    if out.exists() and not out.is_dir():
        raise SteerlabError(f"--out {out} exists and is not a directory")
    if export_dir is not None:
        check_new_dir(export_dir, overwrite=overwrite, keep=(out,), what="export dir")


def _prepare(
    ctx: Ctx, data: RefusalData, sel: Selection, export_dir: Path, out: Path, overwrite: bool
) -> ExportCheck:
    """The orthogonalized checkpoint, built aside and checked against runtime ablation."""
    n = EXPORT_CHECK_PROMPTS
    prompts = data.eval_harmful[:n] + data.eval_harmless[:n]
    return prepare_export(
        ctx.lm, sel.ablated, export_dir, prompts, ctx.cfg.chat, keep=(out,),
        overwrite=overwrite, spill_dir=ctx.run.path("cache"),
    )  # fmt: skip


def _publish(
    ctx: Ctx,
    prepared: ExportCheck,
    export_dir: Path,
    sel: Selection,
    ev: Evaluation,
    out: Path,
    overwrite: bool,
) -> dict[str, Any]:
    """Publish the checked checkpoint with its model card; returns the export record."""
    lm, run = ctx.lm, ctx.run
    card = model_card(
        lm.info.model_id,
        sel.best,
        ev.metrics,
        ctx.cfg,
        prepared.check,
        prepared.equivalence,
        span=sel.span,
    )
    record = {
        "source_model": lm.info.to_dict(),
        "weights": run.identity["weights"],
        "selected": sel.best,
        "directions": sel.k,
        "span": [{"layer": c["layer"], "position": c["position"]} for c in sel.span],
    }
    return publish_export(prepared, export_dir, card, record, keep=(out,), overwrite=overwrite)


def _checked(prepared: ExportCheck, export_dir: Path | None) -> dict[str, Any]:
    """The export record before publishing (what stands if publishing fails or is skipped)."""
    return {
        "dir": str(export_dir),
        "check": prepared.check,
        "error": prepared.error,
        "equivalence": prepared.equivalence,
    }


def run_refusal(
    lm: LoadedModel,
    cfg: RefusalConfig,
    out_dir: str | Path,
    *,
    export_dir: Path | None = None,
    overwrite: bool = False,
    progress: Bar | None = None,
    status: Callable[[str], None] | None = None,
    engine: Any = None,
) -> RefusalReport:
    """Run the whole pipeline and write ``direction.safetensors``, ``report.json`` and
    ``report.html`` into ``out_dir``. Returns the report (its ``to_dict()`` is ``report.json``).
    ``engine`` decodes the evaluation's completions (:mod:`steerlab.engines`; default: the
    Hugging Face model).

    Raises:
        DataError, SteerlabError: bad input (before anything is written), or a failed step
            (after the report was written, saying so).
    """
    out = Path(out_dir)
    _check_inputs(lm, cfg, out, export_dir, overwrite)
    data = load_data(cfg, lm.tokenizer)  # reads and checks the prompt sets: nothing written yet
    run = Run(out, kind="refusal", lm=lm, engine=engine, progress=progress, status=status)
    ctx = Ctx(
        run, lm, cfg, refusal_token_ids(lm.tokenizer), getattr(lm.tokenizer, "chat_template", None)
    )
    done: dict[str, Any] = {"data": data}
    notes = list(data.notes)
    prepared: ExportCheck | None = None
    step = "filter"
    try:
        with run.step("filter"):
            done["filtered"] = filter_prompts(ctx, data)
        step = "candidates"
        with run.step(step):
            done["cands"] = candidates(ctx, done["filtered"])
        step = "selection"
        with run.step(step):
            done["sel"] = sel = selection(ctx, data, done["cands"])
        notes = sel.notes + notes
        step = "coefficient"
        with run.step(step):
            done["coeff"] = coeff = coefficient(ctx, data, sel)
        direction_artifact(ctx, done["filtered"], sel, coeff)
        if export_dir is not None:
            step = "export_check"
            with run.step(step):
                prepared = _prepare(ctx, data, sel, export_dir, out, overwrite)
            if prepared.error:
                notes.append(f"export failed its check: {prepared.error}")
                run.say(f"export check failed: {prepared.error}; evaluating anyway")
        step = "evaluation"
        with run.step(step):
            done["ev"] = ev = evaluation(ctx, data, sel, coeff)
        if prepared is not None:
            done["export"] = _checked(prepared, export_dir)
        if prepared is not None and prepared.tmp is not None and export_dir is not None:
            step = "export"
            with run.step(step):
                done["export"] = _publish(ctx, prepared, export_dir, sel, ev, out, overwrite)
    except Exception as e:
        failure = Failure(step, str(e) or type(e).__name__)
        _write(run, build_report(ctx, **done, notes=notes, failure=failure))
        e.steerlab_report = str(out / "report.html")  # type: ignore[attr-defined]
        raise
    finally:  # a checked checkpoint not published (failure, Ctrl-C) is not left behind
        if prepared is not None and prepared.tmp is not None:
            shutil.rmtree(prepared.tmp, ignore_errors=True)
    report = build_report(ctx, **done, notes=notes)
    _write(run, report)
    if prepared is not None and prepared.error:
        err = SteerlabError(prepared.error)
        err.steerlab_report = str(out / "report.html")  # type: ignore[attr-defined]
        raise err
    return report
