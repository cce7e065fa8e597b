"""What a refusal run's numbers say, in words: is each effect distinguishable from the baseline
and from the random control (do the 95% intervals separate?), and did any intervention do
nothing measurable. The report puts these first, the CLI prints them.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..metrics import compare_rates
from .config import RefusalConfig
from .result import VariantMetrics, Verdict

__all__ = ["refusal_verdicts"]


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _rate(m: VariantMetrics, which: str) -> str:
    s = m.of(which)
    assert s.refusal_ci is not None and s.refusal_rate is not None  # _counts said so
    lo, hi = s.refusal_ci
    return f"{_pct(s.refusal_rate)} [{_pct(lo)}–{_pct(hi)}]"


def _counts(m: VariantMetrics | None, which: str) -> tuple[int, int] | None:
    s = m.of(which) if m else None
    if s is None or s.refusal_k is None or not s.n:
        return None
    return int(s.refusal_k), int(s.n)


def _below(a: VariantMetrics, b: VariantMetrics, which: str) -> bool:
    """``a``'s refusal rate on ``which`` is lower than ``b``'s (both measured: see _counts)."""
    ra, rb = a.of(which).refusal_rate, b.of(which).refusal_rate
    return ra is not None and rb is not None and ra < rb


def _p(p: float) -> str:
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


Metrics = VariantMetrics | None  # one variant's metrics, None when it was not run


def _verdict(check: str, ok: bool, text: str) -> Verdict:
    return Verdict(check, "ok" if ok else "warning", text)


def _ablation_vs_baseline(base: Metrics, abl: Metrics) -> Verdict | None:
    b, a = _counts(base, "harmful"), _counts(abl, "harmful")
    if not (b and a and base and abl):
        return None
    c = compare_rates(*a, *b)
    ok = c["separated"] and _below(abl, base, "harmful")
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


def _ablation_vs_random(rnd: Metrics, abl: Metrics) -> Verdict | None:
    r, a = _counts(rnd, "harmful"), _counts(abl, "harmful")
    if not (r and a and rnd and abl):
        return None
    c = compare_rates(*a, *r)
    ok = c["separated"] and _below(abl, rnd, "harmful")
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


def _random_vs_baseline(rnd: Metrics, base: Metrics) -> Verdict | None:
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
    metrics: Mapping[str, VariantMetrics], base: Metrics, coeff: float | None
) -> list[Verdict]:
    """Whether addition and clamping make harmless prompts refused, beyond the baseline."""
    out: list[Verdict] = []
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
        ok = c["separated"] and _below(base, m, "harmless")
        text = (
            f"{what} made {_rate(m, 'harmless')} of harmless prompts refused (without: "
            f"{_rate(base, 'harmless')}); "
        )
        text += (
            "the intervals separate." if ok else "this intervention did nothing measurable here."
        )
        out.append(_verdict(f"{name}_induces", ok, text))
    return out


def _orthogonalized(orth: Metrics, abl: Metrics, equivalent: bool) -> Verdict | None:
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


def _ablation_kl(abl: Metrics, kl_max: float) -> Verdict | None:
    kl = abl.kl_harmless if abl else None
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
    metrics: Mapping[str, VariantMetrics],
    cfg: RefusalConfig,
    coeff: float | None,
    equivalent: bool = True,
) -> list[Verdict]:
    """The :class:`Verdict` of each check that has its numbers, in reading order.

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
