"""Prompt sets for the refusal pipeline: loading, caps, length filter, leakage guard."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..errors import DataError
from ..io.prompts import read_prompts
from ..models.chat import encode
from .config import RefusalConfig

__all__ = ["MIN_SET", "RefusalData", "load_data"]

MIN_SET = 8


@dataclass
class RefusalData:
    harmful: list[str]
    harmless: list[str]
    harmful_val: list[str]
    harmless_val: list[str]
    eval_harmful: list[str]
    eval_harmless: list[str]
    notes: list[str] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.__dict__.items() if isinstance(v, list) and k != "notes"}


def _key(s: str) -> str:
    return " ".join(s.lower().split())


def load_data(cfg: RefusalConfig, tokenizer: Any) -> RefusalData:
    """Read, shuffle (seeded), cap, drop long prompts, and keep evaluation prompts out of
    training and selection."""
    notes: list[str] = []

    def read(spec: str, cap: int, name: str) -> list[str]:
        items = list(dict.fromkeys(read_prompts(spec)))
        # One generator per set: the train and val draws must not depend on how many
        # evaluation prompts were shuffled before them.
        random.Random(f"{cfg.seed}:{name}").shuffle(items)
        kept = []
        too_long = 0
        for p in items:
            if len(kept) >= cap:
                break
            n_tok = int(encode(tokenizer, [p], chat=cfg.chat).input_ids.shape[1])
            if n_tok > cfg.max_prompt_tokens:
                too_long += 1
                continue
            kept.append(p)
        if too_long:
            notes.append(
                f"{name}: dropped {too_long} prompt(s) longer than "
                f"{cfg.max_prompt_tokens} tokens (CPU budget)."
            )
        if len(kept) < MIN_SET:
            raise DataError(
                f"the {name} set ({spec}) has {len(kept)} usable prompt(s); need at least {MIN_SET}"
            )
        return kept

    ev_h = read(cfg.eval_harmful, cfg.n_eval, "eval harmful")
    ev_hl = read(cfg.eval_harmless, cfg.n_eval, "eval harmless")
    held_out = {_key(p) for p in ev_h + ev_hl}
    out = {}
    for name, spec, cap in (
        ("harmful", cfg.harmful, cfg.n_train),
        ("harmless", cfg.harmless, cfg.n_train),
        ("harmful_val", cfg.harmful_val, cfg.n_val),
        ("harmless_val", cfg.harmless_val, cfg.n_val),
    ):
        items = read(spec, cap * 4, name.replace("_", " "))
        clean = [p for p in items if _key(p) not in held_out]
        if len(clean) < len(items):
            notes.append(
                f"{name}: removed {len(items) - len(clean)} prompt(s) that are also in "
                "the evaluation sets."
            )
        out[name] = clean[:cap]
        if len(out[name]) < MIN_SET:
            raise DataError(
                f"the {name} set has {len(out[name])} prompt(s) after removing "
                f"evaluation prompts; need at least {MIN_SET}"
            )
    val_keys = {_key(p) for p in out["harmful_val"] + out["harmless_val"]}
    for name in ("harmful", "harmless"):
        before = len(out[name])
        out[name] = [p for p in out[name] if _key(p) not in val_keys]
        if len(out[name]) < before:
            notes.append(f"{name}: removed {before - len(out[name])} prompt(s) shared with val.")
    return RefusalData(
        out["harmful"], out["harmless"], out["harmful_val"], out["harmless_val"], ev_h, ev_hl, notes
    )
