"""What a refusal run's numbers say, in words: is each effect distinguishable from the baseline
and from the random control (do the 95% intervals separate?), and did any intervention do
nothing measurable. The report puts these first, the CLI prints them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..metrics import compare_rates
from .config import RefusalConfig

__all__ = ["refusal_verdicts"]


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _rate(m: Mapping[str, Any], which: str) -> str:
    lo, hi = m[f"{which}_refusal_ci"]
    return f"{_pct(m[f'{which}_refusal_rate'])} [{_pct(lo)}–{_pct(hi)}]"


def _counts(m: Mapping[str, Any] | None, which: str) -> tuple[int, int] | None:
    if not m or m.get(f"{which}_refusal_k") is None or not m.get(f"{which}_n"):
        return None
    return int(m[f"{which}_refusal_k"]), int(m[f"{which}_n"])


def _p(p: float) -> str:
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


Metrics = Mapping[str, Any] | None  # one variant's metrics, None when it was not run


def _verdict(check: str, ok: bool, text: str) -> dict[str, Any]:
    return {"check": check, "level": "ok" if ok else "warning", "text": text}


def _ablation_vs_baseline(base: Metrics, abl: Metrics) -> dict[str, Any] | None:
    b, a = _counts(base, "harmful"), _counts(abl, "harmful")
    if not (b and a and base and abl):
        return None
    c = compare_rates(*a, *b)
    lower = abl["harmful_refusal_rate"] < base["harmful_refusal_rate"]
    ok = c["separated"] and lower
    how = "separate" if c["separated"] else "overlap"
    tail = (
        "the effect is distinguishable from the baseline"
        if ok
        else f"on {a[1]} prompts the effect is not distinguishable from the baseline"
    )
    return _verdict(
        "ablation_vs_baseline",
        ok,
        f"Ablating the direction changed harmful refusal from {_rate(base, 'harmful')} to "
        f"{_rate(abl, 'harmful')}; the intervals {how} ({_p(c['p_fisher'])}): {tail}.",
    )


def _ablation_vs_random(rnd: Metrics, abl: Metrics) -> dict[str, Any] | None:
    r, a = _counts(rnd, "harmful"), _counts(abl, "harmful")
    if not (r and a and rnd and abl):
        return None
    c = compare_rates(*a, *r)
    ok = c["separated"] and abl["harmful_refusal_rate"] < rnd["harmful_refusal_rate"]
    return _verdict(
        "ablation_vs_random",
        ok,
        f"A random direction of the same norm, ablated, leaves {_rate(rnd, 'harmful')} "
        f"refused; ablation's interval {'separates from' if c['separated'] else 'overlaps'} "
        f"it ({_p(c['p_fisher'])}): "
        + (
            "the effect is specific to this direction."
            if ok
            else "the effect is not distinguishable from the random control."
        ),
    )


def _random_vs_baseline(rnd: Metrics, base: Metrics) -> dict[str, Any] | None:
    r, b = _counts(rnd, "harmful"), _counts(base, "harmful")
    if not (r and b and rnd and base):
        return None
    c = compare_rates(*r, *b)
    return _verdict(
        "random_vs_baseline",
        not c["separated"],
        f"The random control ({_rate(rnd, 'harmful')}) "
        + (
            "is not distinguishable from the baseline, as a control should be."
            if not c["separated"]
            else "differs from the baseline: part of the effect may come from "
            "any push of this size, not from this direction."
        ),
    )


def _induces(
    metrics: Mapping[str, Mapping[str, Any]], base: Metrics, coeff: float | None
) -> list[dict[str, Any]]:
    """Whether addition and clamping make harmless prompts refused, beyond the baseline."""
    out = []
    hb = _counts(base, "harmless")
    for name, what in (
        (
            "addition",
            f"Adding the direction (coefficient {coeff:g})"
            if coeff is not None
            else "Adding the direction",
        ),
        ("clamp", "Clamping the projection to the harmful mean"),
    ):
        m = metrics.get(name)
        h = _counts(m, "harmless")
        if not (h and hb and m and base):
            continue
        c = compare_rates(*h, *hb)
        ok = c["separated"] and m["harmless_refusal_rate"] > base["harmless_refusal_rate"]
        text = (
            f"{what} made {_rate(m, 'harmless')} of harmless prompts refused (without: "
            f"{_rate(base, 'harmless')}); "
        )
        text += (
            "the intervals separate." if ok else "this intervention did nothing measurable here."
        )
        out.append(_verdict(f"{name}_induces", ok, text))
    return out


def _orthogonalized(orth: Metrics, abl: Metrics, equivalent: bool) -> dict[str, Any] | None:
    o, a = _counts(orth, "harmful"), _counts(abl, "harmful")
    if not (o and a and orth and abl):
        return None
    c = compare_rates(*o, *a)
    return _verdict(
        "orthogonalized_matches_ablation",
        not c["separated"],
        f"The orthogonalized weights refuse {_rate(orth, 'harmful')} of harmful prompts, "
        f"runtime ablation {_rate(abl, 'harmful')}: "
        + (
            "the same within their intervals."
            if not c["separated"]
            else "they differ, although the edit should be equivalent."
            if equivalent
            else "they differ; with sandwich norms the edit removes the direction exactly "
            "but is not identical to runtime ablation."
        ),
    )


def _ablation_kl(abl: Metrics, kl_max: float) -> dict[str, Any] | None:
    kl = (abl or {}).get("kl_harmless")
    if kl is None:
        return None
    return _verdict(
        "ablation_kl",
        kl <= kl_max,
        f"KL on held-out harmless prompts under ablation: {kl:.3f} "
        + (
            f"(within the selection bound {kl_max:g})."
            if kl <= kl_max
            else f"(above the selection bound {kl_max:g}: ordinary answers change "
            "more than the selection allowed)."
        ),
    )


def refusal_verdicts(
    metrics: Mapping[str, Mapping[str, Any]],
    cfg: RefusalConfig,
    coeff: float | None,
    equivalent: bool = True,
) -> list[dict[str, Any]]:
    """A list of ``{"check", "level" ("ok" | "warning"), "text"}``, in reading order.

    ``equivalent``: the orthogonalized weights compute exactly what runtime ablation does
    (False for sandwich-norm models, whose edit only removes the direction)."""
    base, abl = metrics.get("baseline"), metrics.get("ablation")
    rnd, orth = metrics.get("random"), metrics.get("orthogonalized")
    found = [
        _ablation_vs_baseline(base, abl),
        _ablation_vs_random(rnd, abl),
        _random_vs_baseline(rnd, base),
        *_induces(metrics, base, coeff),
        _orthogonalized(orth, abl, equivalent),
        _ablation_kl(abl, cfg.kl_max),
    ]
    return [v for v in found if v is not None]
