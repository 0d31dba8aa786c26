"""Choose which of a user's examples FaLA re-embeds after a swap.

Each frozen forward on the new backbone costs real device time, so FaLA keeps one example per
cluster of the user's documents (clustered on the OLD backbone's embeddings before the swap).
The other selectors are the ablations of FaLA Table 4. Selectors are looked up by name in
``SELECTORS``; all return sorted unique indices and are deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans

from strategies.fala.kwikbucks import (
    KwikBucks,
    KwikCluster,
    cosine_similarity_matrix,
    strong_signal,
)


@dataclass
class SelectionResult:
    """Chosen example indices (sorted, unique), clusters found (0 when the method does not
    cluster) and strong-oracle queries spent."""

    indices: np.ndarray
    n_clusters: int
    n_strong_queries: int


@dataclass(frozen=True)
class SelectionRequest:
    """Everything a selector may use; ``rng`` is the only source of randomness."""

    embeddings: np.ndarray
    labels: np.ndarray
    max_examples: int | None
    k_neighbors: int
    edge_rule: str
    query_budget: int | None
    n_clusters: int | None
    rng: np.random.Generator

    @property
    def n(self) -> int:
        return self.embeddings.shape[0]

    @property
    def cap(self) -> int:
        return self.n if self.max_examples is None else min(self.max_examples, self.n)


def _result(indices: np.ndarray, n_clusters: int, n_queries: int) -> SelectionResult:
    return SelectionResult(np.unique(np.asarray(indices, dtype=np.intp)), n_clusters, n_queries)


def _cap_order(example_labels: np.ndarray, clusters: np.ndarray,
               pivots: np.ndarray) -> np.ndarray:
    """Pivots in the order a cap keeps them: label-stratified (ALGORITHMS.md, "FaLA's
    example cap") — round-robin over the pivots' labels, each label's pivots by cluster size,
    biggest first — so a user with 4 % clicks keeps click examples under any cap >= 2.

    Labels take turns in the order of their largest cluster (ties: lower label); clusters of
    equal size keep the lower cluster id first."""
    sizes = np.bincount(clusters, minlength=len(pivots))
    by_size = np.argsort(-sizes, kind="stable")  # cluster ids, biggest first
    pivot_labels = np.asarray(example_labels)[pivots]
    queues: dict[float, list[int]] = {}
    for cluster in by_size:  # insertion order = labels by their largest cluster
        queues.setdefault(float(pivot_labels[cluster]), []).append(int(pivots[cluster]))
    order: list[int] = []
    for turn in range(max((len(q) for q in queues.values()), default=0)):
        order += [queue[turn] for queue in queues.values() if turn < len(queue)]
    return np.asarray(order, dtype=np.intp)


def _kwikbucks(request: SelectionRequest) -> KwikBucks:
    strong = strong_signal(
        request.embeddings, request.labels, k=request.k_neighbors, edge_rule=request.edge_rule
    )
    return KwikBucks(query_budget=request.query_budget, random_state=request.rng).fit(
        cosine_similarity_matrix(request.embeddings), strong
    )


def select_kwikbucks(request: SelectionRequest) -> SelectionResult:
    """One pivot per KwikBucks cluster; over the cap, label-stratified, largest clusters
    first within a label."""
    clustering = _kwikbucks(request)
    ranked = _cap_order(request.labels, clustering.labels_, clustering.pivots_)
    return _result(ranked[: request.cap], clustering.n_clusters_, clustering.n_queries_)


def select_kwikcluster(request: SelectionRequest) -> SelectionResult:
    """One pivot per KwikCluster cluster (queries every needed pair; no budget applies)."""
    strong = strong_signal(
        request.embeddings, request.labels, k=request.k_neighbors, edge_rule=request.edge_rule
    )
    clustering = KwikCluster(random_state=request.rng).fit(strong)
    ranked = _cap_order(request.labels, clustering.labels_, clustering.pivots_)
    return _result(ranked[: request.cap], clustering.n_clusters_, clustering.n_queries_)


def select_kmeans(request: SelectionRequest) -> SelectionResult:
    """k-means ablation: per centroid, its cluster's member nearest to it.

    k is ``n_clusters`` when given, else the KwikBucks cluster count (whose queries are then
    reported); capped by ``max_examples``. Runs on unit-normalised embeddings so that it sees
    the same cosine geometry as the weak signal."""
    n_queries = 0
    k = request.n_clusters
    if k is None:
        clustering = _kwikbucks(request)
        k, n_queries = clustering.n_clusters_, clustering.n_queries_
    k = max(1, min(k, request.cap))
    norms = np.linalg.norm(request.embeddings, axis=1, keepdims=True)
    points = np.divide(
        request.embeddings, norms, out=np.zeros_like(request.embeddings), where=norms > 0
    )
    model = KMeans(n_clusters=k, n_init=3, random_state=int(request.rng.integers(2**31 - 1)))
    assignment = model.fit_predict(points)
    distances = np.linalg.norm(points - model.cluster_centers_[assignment], axis=1)
    chosen = [
        members[np.argmin(distances[members])]
        for members in (np.flatnonzero(assignment == c) for c in range(k))
        if members.size
    ]
    return _result(np.asarray(chosen), k, n_queries)


def select_all(request: SelectionRequest) -> SelectionResult:
    """Every example, no clustering: the all-examples ablation ignores ``max_examples``."""
    return _result(np.arange(request.n), 0, 0)


def select_fala_k(request: SelectionRequest) -> SelectionResult:
    """FaLA-K: exactly K = max_examples examples (fewer only if the user has fewer), KwikBucks
    pivots first (in the cap's label-stratified order), the rest uniformly at random without
    replacement."""
    clustering = _kwikbucks(request)
    pivots = _cap_order(request.labels, clustering.labels_, clustering.pivots_)[: request.cap]
    others = np.setdiff1d(np.arange(request.n), pivots)
    extra = request.rng.choice(others, size=request.cap - len(pivots), replace=False)
    chosen = np.concatenate([pivots, extra])
    return _result(chosen, clustering.n_clusters_, clustering.n_queries_)


SELECTORS: dict[str, Callable[[SelectionRequest], SelectionResult]] = {
    "kwikbucks": select_kwikbucks,
    "kwikcluster": select_kwikcluster,
    "kmeans": select_kmeans,
    "all": select_all,
    "fala-k": select_fala_k,
}


def select_examples(
    method: str,
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    max_examples: int | None = 64,
    k_neighbors: int = 5,
    edge_rule: str = "and",
    query_budget: int | None = None,
    n_clusters: int | None = None,
    random_state: int | np.random.Generator | None = None,
) -> SelectionResult:
    """Pick fine-tune examples with the selector named ``method`` (see ``SELECTORS``).

    ``embeddings`` are the OLD backbone's (n, d) cached vectors and ``labels`` the user's
    labels; ``max_examples=None`` means no cap; ``n_clusters`` fixes k for ``kmeans``."""
    if method not in SELECTORS:
        raise ValueError(f"selection method must be one of {sorted(SELECTORS)}, got {method!r}")
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got {embeddings.shape}")
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("embeddings contain NaN or inf")
    labels = np.asarray(labels)
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(
            f"labels must have shape ({embeddings.shape[0]},) to match embeddings, "
            f"got {labels.shape}"
        )
    for name, value in (("max_examples", max_examples), ("n_clusters", n_clusters)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
        ):
            raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")
    request = SelectionRequest(
        embeddings=embeddings,
        labels=labels,
        max_examples=max_examples,
        k_neighbors=k_neighbors,
        edge_rule=edge_rule,
        query_budget=query_budget,
        n_clusters=n_clusters,
        rng=np.random.default_rng(random_state),
    )
    return SELECTORS[method](request)
