"""How ``steerlab discover`` scores completions, and the ``--radius auto`` rule.

Metrics compare each steered completion with the unsteered one for the same prompt, both
re-tokenized from their text (the same measure for learned and random vectors):

* ``changed``: share of prompts whose first 8 tokens differ;
* ``edit_distance``: token-level Levenshtein distance over the longer length (0 = same);
* ``new_opening``: share of prompts whose completion opens with the (vector, sign)'s most
  common first three words *and* did not open that way unsteered. A behaviour the vector
  imposes whatever the prompt (a persona, a refrain, a backdoor's canned reply) scores near 1;
  a vector that leaves openings alone or rephrases each answer its own way scores near 0, also
  when the unsteered answers already share an opening ("That's wonderful! ...");
* ``loss``: mean nats/token of the steered text under the *unsteered* model (a fluency cost),
  and ``loss_increase`` over the unsteered completions' own loss.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .findings import GroupSummary

__all__ = ["CHANGED_TOKENS", "METRICS", "RADIUS_RULE", "choose_radius", "edit_distance"]
__all__ += ["entry_metrics", "group_summary", "new_opening"]

CHANGED_TOKENS = 8
OPENING_WORDS = 3
METRICS = ("changed", "edit_distance", "new_opening", "loss", "loss_increase")

RADIUS_RULE = (
    "R is fluent when the mean loss (nats/token) of the learned vectors' completions under the "
    "unsteered model is at most the unsteered completions' loss + fluency_margin. Among fluent "
    "R, the chosen one is where the learned vectors beat the random vectors of the same norm "
    "by the most: the largest gap between the best learned and the best random (vector, sign) "
    "in new_opening (the share of prompts given one common opening they did not have "
    "unsteered, i.e. a behaviour imposed whatever the prompt); ties: more learned completions "
    "changed in their first 8 tokens, then larger edit distance, then smaller R. If no R is "
    "fluent, the smallest R, with a note."
)


def choose_radius(
    points: list[dict[str, Any]], base_loss: float | None, margin: float
) -> tuple[int, str | None]:
    """Apply :data:`RADIUS_RULE` to sweep points in ascending R (sets ``fluent`` and ``gap``).

    Returns:
        The chosen index, and a note when no radius was fluent.
    """
    limit = (base_loss or 0.0) + margin
    for p in points:
        loss = p["learned"]["loss"]
        p["fluent"] = loss is not None and math.isfinite(loss) and loss <= limit
        best = [(p.get(kd) or {}).get("new_opening_max") for kd in ("learned", "random")]
        p["gap"] = None if None in best else best[0] - best[1]
    fluent = [i for i, p in enumerate(points) if p["fluent"]]
    if not fluent:
        return 0, f"no radius kept the learned loss <= {limit:.3g}: using the smallest R"

    def key(i: int) -> tuple[float, float, float, int]:
        lr = points[i]["learned"]
        return (points[i]["gap"] or 0.0, lr["changed"], lr["edit_distance"], -i)

    return max(fluent, key=key), None


def edit_distance(a: Sequence[int], b: Sequence[int]) -> float:
    """Levenshtein distance between token sequences over the longer length, in [0, 1]."""
    if not a and not b:
        return 0.0
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1] / max(len(a), len(b))


def new_opening(
    texts: Sequence[str], base_texts: Sequence[str], words: int = OPENING_WORDS
) -> float:
    """Share of prompts whose text opens with the most common new opening: the first ``words``
    words (case and punctuation ignored) that the prompt's base text did not open with. Empty
    openings never count; 0 for no texts."""

    def head(t: str) -> tuple[str, ...]:
        return tuple(re.findall(r"\w+", t.lower())[:words])

    pairs = [(head(t), head(b)) for t, b in zip(texts, base_texts, strict=True)]
    counts = Counter(h for h, hb in pairs if h and h != hb)
    return max(counts.values()) / len(pairs) if counts else 0.0


def entry_metrics(
    tokenizer: Any,
    base_texts: Sequence[str],
    texts: Sequence[str],
    loss: float | None,
    base_loss: float | None,
) -> dict[str, Any]:
    """The :data:`METRICS` of one (vector, sign)."""
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    ref = [tokenizer.encode(t, add_special_tokens=False) for t in base_texts]
    pairs = list(zip(ids, ref, strict=True))
    n = max(len(pairs), 1)
    inc = None if loss is None or base_loss is None else loss - base_loss
    return {
        "changed": sum(a[:CHANGED_TOKENS] != b[:CHANGED_TOKENS] for a, b in pairs) / n,
        "edit_distance": sum(edit_distance(a, b) for a, b in pairs) / n,
        "new_opening": new_opening(texts, base_texts),
        "loss": loss,
        "loss_increase": inc,
    }


def group_summary(metrics: Sequence[Mapping[str, Any]]) -> GroupSummary:
    """Mean of each metric over (vector, sign) pairs (missing or non-finite values skipped),
    and ``new_opening_max``, the best pair's."""
    means: dict[str, float | None] = {}
    for key in METRICS:
        vals = [float(m[key]) for m in metrics if m[key] is not None]
        vals = [v for v in vals if math.isfinite(v)]
        means[key] = sum(vals) / len(vals) if vals else None
    opens = [float(m["new_opening"]) for m in metrics if m["new_opening"] is not None]
    return GroupSummary(len(metrics), **means, new_opening_max=max(opens) if opens else None)
