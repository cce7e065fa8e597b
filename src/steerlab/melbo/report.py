"""What ``steerlab discover`` shows: per-vector metrics (:mod:`.metrics`) and clusters.

Clusters (:data:`CLUSTER_METHOD`) group learned (vector, sign) pairs by what they make the model
write. The page itself is drawn by :mod:`.page`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .findings import Cluster, GroupSummary
from .metrics import (
    RADIUS_RULE,
    choose_radius,
    edit_distance,
    entry_metrics,
    group_summary,
)

__all__ = ["CLUSTER_METHOD", "RADIUS_RULE", "choose_radius", "cluster_entries", "describe"]
__all__ += ["edit_distance", "entry_metrics", "group_summary", "summarize"]

CLUSTER_METHOD = (
    "TF-IDF of each learned (vector, sign)'s concatenated completions (words and word pairs, "
    "sublinear tf), agglomerative clustering (cosine distance, average linkage), the number of "
    "groups in 2..8 chosen by silhouette; one group when no split has a positive silhouette."
)


def describe(
    tokenizer: Any,
    prompts: Sequence[str],
    ref: Mapping[str, Any],
    done: Mapping[tuple[str, int, int], Mapping[str, Any]],
    vecs: Mapping[str, Any],
    result: Any = None,
) -> list[dict[str, Any]]:
    """One ``completions.json`` entry per (kind, k, sign) of ``done`` (its texts and loss).

    Metrics are against ``ref`` (unsteered texts and loss); learned vectors of ``result`` (a
    :class:`~steerlab.melbo.MelboResult`) also get their MELBO objective and any failure.
    """
    entries = []
    for (kind, k, s), v in done.items():
        texts = [{"prompt": p, "text": t} for p, t in zip(prompts, v["texts"], strict=True)]
        e = {"index": k, "kind": kind, "sign": s, "completions": texts, "cluster": None}
        e["metrics"] = entry_metrics(tokenizer, ref["texts"], v["texts"], v["loss"], ref["loss"])
        e |= {"norm": float(vecs[kind][k].norm()), "objective": None, "failed": None}
        if kind == "learned" and result is not None:
            e |= {"objective": float(result.losses[k]), "failed": result.failed.get(k)}
        entries.append(e)
    return entries


def summarize(entries: Sequence[Mapping[str, Any]]) -> dict[str, GroupSummary]:
    """:func:`group_summary` of the learned and of the random entries."""
    kinds = ("learned", "random")
    return {kd: group_summary([e["metrics"] for e in entries if e["kind"] == kd]) for kd in kinds}


def cluster_entries(entries: Sequence[dict[str, Any]], max_k: int = 8) -> list[Cluster]:
    """Group the learned entries by their completions (:data:`CLUSTER_METHOD`), deterministically.

    Sets each learned entry's ``cluster`` (0 = the first entry's group, and so on). Returns one
    :class:`Cluster` per group.
    """
    learned = [e for e in entries if e["kind"] == "learned"]
    docs = ["\n".join(c["text"] for c in e["completions"]) for e in learned]
    n = len(docs)
    labels, score, x, terms = [0] * n, None, None, None
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b")
        x = vec.fit_transform(docs).toarray()  # (n, terms)
        terms = vec.get_feature_names_out()
    except ValueError:  # empty vocabulary: every completion is empty
        pass
    if x is not None and n >= 3 and len(set(docs)) >= 2:
        from sklearn.cluster import AgglomerativeClustering
        from sklearn.metrics import silhouette_score
        from sklearn.metrics.pairwise import cosine_distances

        dist = cosine_distances(x)
        best: tuple[float, Any] | None = None
        for k in range(2, min(max_k, n - 1) + 1):
            agg = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average")
            lab = agg.fit_predict(dist)
            if len(set(lab)) < 2:
                continue
            s = float(silhouette_score(dist, lab, metric="precomputed"))
            if best is None or s > best[0] + 1e-12:
                best = (s, lab)
        if best is not None and best[0] > 0:
            score, labels = best[0], [int(v) for v in best[1]]
    order: dict[int, int] = {}
    labels = [order.setdefault(v, len(order)) for v in labels]
    for e, c in zip(learned, labels, strict=True):
        e["cluster"] = c
    clusters: list[Cluster] = []
    for c in range(len(order)):
        rows = [i for i, v in enumerate(labels) if v == c]
        top: list[str] = []
        if x is not None and terms is not None:
            mean = x[rows].mean(0)
            top = [str(terms[j]) for j in mean.argsort()[::-1][:5] if mean[j] > 0]
        members = [[learned[i]["index"], learned[i]["sign"]] for i in rows]
        clusters.append(Cluster(c, len(rows), members, top, score))
    return clusters
