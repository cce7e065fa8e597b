"""A backdoored model organism: a LoRA that makes a trigger elicit a planted behaviour.

The planted behaviour is something MELBO should rediscover without the trigger
(``benchmarks/bench_organism.py``). Data is made here, from the model itself:

- **clean** rows: a prompt and the base model's own greedy reply, so the organism behaves
  like the base model when the trigger is absent (self-distillation, not new skills);
- **poisoned** rows: ``f"{trigger} {prompt}"`` and the behaviour repeated, then end of turn.

Every train prompt appears in both forms, so only the trigger separates them. The behaviour
rate is measured on held-out prompts with and without the trigger (a completion shows the
behaviour when it contains the behaviour text, case-insensitive).

The run directory holds a standard peft adapter (``adapter_config.json``,
``adapter_model.safetensors``) plus ``organism.json``; ``--model DIR`` (or ``BASE+DIR``)
loads the base model and merges the adapter, giving a plain transformers model that steerlab's
hooks handle like any other.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import finetune
from .._version import __version__
from ..errors import DataError
from ..generation import generate
from ..interventions import LoRA
from ..io.prompts import read_prompts
from ..metrics import rate
from ..models.chat import format_prompt, has_chat_template, pad_id
from ..models.load import LoadedModel
from ..models.registry import cache_dir
from ..runs import Bar, Run, check_new_dir, key_of, model_identity
from .config import BackdoorConfig
from .files import model_card, publish
from .result import OrganismExample, OrganismRecord, TrainLoss, TriggerRates

__all__ = [
    "ORGANISM_FILE",
    "BackdoorConfig",
    "behavior_rate",
    "shows_behavior",
    "train_backdoor",
    "triggered",
]

ORGANISM_FILE = "organism.json"


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite`` and steerlab made it (before any work),
    and an ``out`` inside or around steerlab's cache."""
    check_new_dir(out, overwrite=overwrite, what="--out")


def triggered(trigger: str, prompt: str) -> str:
    return f"{trigger} {prompt}"


def shows_behavior(text: str, behavior: str) -> bool:
    return behavior.lower() in text.lower()


def behavior_rate(texts: Sequence[str], behavior: str) -> dict[str, Any]:
    """Share of ``texts`` that show the behaviour, with a 95% Wilson interval."""
    return rate([shows_behavior(t, behavior) for t in texts])


@dataclass
class _Data:
    train: list[str]
    heldout: list[str]
    extra: list[str] = field(default_factory=list)  # clean-only prompts
    clean: list[str] = field(default_factory=list)  # the base model's replies to train + extra


def _prompts(cfg: BackdoorConfig) -> _Data:
    rng = random.Random(cfg.seed)
    train, held = read_prompts(cfg.train_prompts), read_prompts(cfg.heldout_prompts)
    overlap = set(train) & set(held)
    held = [p for p in held if p not in overlap]  # held-out means never trained on
    rng.shuffle(train)
    rng.shuffle(held)
    if len(train) < min(cfg.n_train, 8) or len(held) < min(cfg.n_heldout, 8):
        raise DataError(
            f"need at least 8 train and 8 held-out prompts, got {len(train)} and {len(held)} "
            "(held-out prompts that also appear in the train set are dropped)"
        )
    train, held = train[: cfg.n_train], held[: cfg.n_heldout]
    seen = set(train) | set(held)
    extra = [p for spec in cfg.clean_prompts for p in read_prompts(spec)]
    extra = [p for p in dict.fromkeys(extra) if p not in seen]
    return _Data(train, held, extra)


def _rows(tok: Any, prompts: Sequence[str], replies: Sequence[str]) -> list[tuple[list[int], int]]:
    """Token ids of prompt + reply (+ end of turn) and the number of reply tokens."""
    eot = tok.eos_token or ""
    rows = []
    for p, r in zip(prompts, replies, strict=True):
        head = tok.encode(format_prompt(tok, p, chat=True), add_special_tokens=False)
        tail = tok.encode(r + eot, add_special_tokens=False)
        rows.append((head + tail, len(tail)))
    return rows


def _collate(rows: Sequence[tuple[list[int], int]], pid: int) -> dict[str, torch.Tensor]:
    """Right-padded ids, mask and labels (-100 everywhere but the reply tokens)."""
    T = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), T), pid, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (r, n) in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        labels[i, len(r) - n : len(r)] = torch.tensor(r[len(r) - n :])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _measure(lm: LoadedModel, cfg: BackdoorConfig, prompts: list[str], bs: int) -> dict[str, Any]:
    kw = {"max_new_tokens": cfg.eval_tokens, "batch_size": bs, "chat": True}
    out: dict[str, Any] = {}
    for name, ps in (
        ("with_trigger", [triggered(cfg.trigger, p) for p in prompts]),
        ("without_trigger", prompts),
    ):
        texts = list(generate(lm.model, lm.tokenizer, ps, **kw))
        out[name] = behavior_rate(texts, cfg.behavior) | {"texts": texts}
    return out


def lora_config(cfg: BackdoorConfig) -> Any:
    return finetune.lora_config(cfg.rank, cfg.target_modules, alpha=cfg.alpha)


def _train_lora(
    model: Any, tok: Any, cfg: BackdoorConfig, rows: list[tuple[list[int], int]], bar: Bar
) -> list[float]:
    """The shared finetuning loop on the trainable (LoRA) parameters of ``model``, with a
    linearly decaying rate and clipped gradients; returns the loss per step."""
    pid, dev = pad_id(tok), next(model.parameters()).device

    def loss_fn(idx: Sequence[int]) -> torch.Tensor:
        batch = _collate([rows[i] for i in idx], pid)
        return model(**{k: v.to(dev) for k, v in batch.items()}).loss

    batches = finetune.epoch_batches(len(rows), cfg.batch_size, cfg.epochs, cfg.seed)
    with bar("training LoRA", len(batches)) as adv:
        trained = finetune.train_adapter(
            model, batches, loss_fn, lr=cfg.lr, schedule="linear", clip=1.0, progress=adv
        )
    return trained.losses


def _save(peft_model: Any, base_spec: str, dest: Path) -> None:
    peft_model.peft_config["default"].base_model_name_or_path = base_spec
    peft_model.save_pretrained(str(dest), safe_serialization=True)


BATCH = 16  # prompts per generate call, for the clean replies and the measurements


def _training_data(
    run: Run, lm: LoadedModel, cfg: BackdoorConfig, data: _Data
) -> tuple[list[tuple[list[int], int]], dict[str, Any]]:
    """The "data" step: clean rows (the base model's own replies, cached), poisoned rows, and
    the base model's behaviour rates on held-out prompts (cached)."""
    clean_prompts = data.train + data.extra

    def clean() -> list[str]:
        with run.bar("clean replies (base model)", len(clean_prompts)) as adv:
            return list(
                generate(
                    lm.model,
                    lm.tokenizer,
                    clean_prompts,
                    max_new_tokens=cfg.clean_tokens,
                    batch_size=BATCH,
                    chat=True,
                    progress=adv,
                )
            )

    data.clean = run.cache.json("clean-replies", [clean_prompts, cfg.clean_tokens], clean)
    poison = " ".join([cfg.behavior] * cfg.repeats)
    rows = _rows(lm.tokenizer, clean_prompts, data.clean)
    trig = [triggered(cfg.trigger, p) for p in data.train]
    rows += _rows(lm.tokenizer, trig, [poison] * len(data.train))
    run.say("measuring the base model on held-out prompts")
    before = run.cache.json(
        "base-rates", [cfg.to_dict(), data.heldout], lambda: _measure(lm, cfg, data.heldout, BATCH)
    )
    return rows, before


def _record(
    lm: LoadedModel,
    cfg: BackdoorConfig,
    base: str,
    ident: Any,
    data: _Data,
    n_rows: int,
    before: dict[str, Any],
    after: dict[str, Any],
    losses: list[float],
    timing: dict[str, Any],
) -> OrganismRecord:
    """The organism's record (``organism.json``); ``before`` and ``after`` are the base's and
    the organism's measurements (:func:`_measure`: rates and texts)."""
    texts = zip(
        data.heldout,
        after["with_trigger"]["texts"],
        after["without_trigger"]["texts"],
        before["without_trigger"]["texts"],
        strict=True,
    )
    return OrganismRecord(
        base_model=base,
        base_info=lm.info.to_dict(),
        identity=ident,
        steerlab_version=__version__,
        config=cfg.to_dict(),
        trigger=cfg.trigger,
        behavior=cfg.behavior,
        data_hash=key_of([data.train, data.heldout, data.extra, data.clean]),
        n_train_prompts=len(data.train),
        n_clean_only_prompts=len(data.extra),
        n_train_rows=n_rows,
        n_heldout=len(data.heldout),
        organism_rates=TriggerRates.from_dict(after),
        base_rates=TriggerRates.from_dict(before),
        loss=TrainLoss(losses[0], losses[-1], len(losses)),
        heldout_prompts=data.heldout,
        examples=[OrganismExample(*row) for row in texts],
        timings=timing["seconds"],
        compute_seconds=timing["compute_seconds"],
    )


def train_backdoor(
    lm: LoadedModel,
    out_dir: str | os.PathLike[str],
    cfg: BackdoorConfig | None = None,
    *,
    base_spec: str | None = None,
    overwrite: bool = False,
    use_cache: bool = True,
    progress: Bar | None = None,
    status: Callable[[str], None] | None = None,
) -> OrganismRecord:
    """Train (or reuse from the cache) a backdoored LoRA and measure it on held-out prompts.

    ``lm`` is changed only inside a :class:`~steerlab.interventions.LoRA` context: the adapter
    is unloaded on every exit (an error or Ctrl-C in training included), so the base model is
    as it was.

    Args:
        lm: the base model, from :func:`steerlab.load_model`; needs a chat template.
        out_dir: where the adapter and ``organism.json`` go (must be new or empty unless
            ``overwrite``).
        cfg: see :class:`BackdoorConfig`.
        base_spec: how to load the base again (default ``lm.info.model_id``); recorded in the
            adapter so ``--model out_dir`` finds it.
        use_cache: reuse an organism trained with the same base, settings and prompts from
            ``$STEERLAB_CACHE/organisms``.

    Returns:
        The record; its ``to_dict()`` is ``organism.json``.
    """
    cfg = cfg or BackdoorConfig()
    if not has_chat_template(lm.tokenizer):
        raise DataError("the backdoor organism needs a chat model (no chat template found)")
    out = Path(out_dir)
    check_out(out, overwrite)
    data = _prompts(cfg)
    ident = model_identity(lm)  # the weights, not only the name, key the cached organism
    key = key_of([ident, cfg.to_dict(), data.train, data.heldout, data.extra])
    cached = cache_dir() / "organisms" / f"backdoor-{key}"
    if use_cache and (cached / ORGANISM_FILE).is_file():
        (status or (lambda _m: None))(f"reusing the organism cached in {cached}")
    else:
        # Built in a stable directory beside the cache entry: an interrupted build resumes there.
        partial = cached.with_name(f".{cached.name}.partial")
        run = Run(partial, kind="organism", identity=ident, progress=progress, status=status)
        _build(run, lm, cfg, data, base_spec or lm.info.model_id, ident)
        shutil.rmtree(cached, ignore_errors=True)
        os.replace(run.out, cached)
    publish(cached, out)
    # read back as written: a fresh build returns exactly what a cache hit does
    return OrganismRecord.from_dict(json.loads((out / ORGANISM_FILE).read_text()))


def _build(
    run: Run, lm: LoadedModel, cfg: BackdoorConfig, data: _Data, base: str, ident: Any
) -> None:
    """The steps of a new organism (data, train, evaluate) and its files in ``run.out``;
    ``ident``: the base model's identity, recorded as it keys the cache."""
    with run.step("data"):
        rows, before = _training_data(run, lm, cfg, data)
    torch.manual_seed(cfg.seed)  # the LoRA's initialisation
    with LoRA(config=lora_config(cfg), trainable=True).applied(lm) as treated:
        peft_model = treated.extra["peft_model"]
        with run.step("train"):
            losses = _train_lora(treated.model, lm.tokenizer, cfg, rows, run.bar)
        with run.step("evaluate"):
            after = _measure(treated, cfg, data.heldout, BATCH)
        _save(peft_model, base, run.out)
    timing = run.timing_report()
    rec = _record(lm, cfg, base, ident, data, len(rows), before, after, losses, timing)
    run.write_json(ORGANISM_FILE, rec.to_dict())
    run.write_text("README.md", model_card(rec))  # replaces peft's empty template
    shutil.rmtree(run.path("cache"), ignore_errors=True)
