"""Correlation clustering with a cheap weak signal and an expensive strong oracle.

FaLA picks one fine-tune example per cluster of a user's documents. The strong oracle
("same label and near neighbours") is what defines a good cluster; KwikBucks (Silwal et al.,
ICLR 2023) spends few strong queries by asking only the pivots the weak signal (cosine of the
OLD backbone's embeddings) ranks highest. KwikCluster (Ailon et al.) is the classic pivot
algorithm that queries everything; it is kept as the 3-approximation reference.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator

StrongSignal = np.ndarray | Callable[[int, int], bool]
"""An (n, n) symmetric boolean adjacency, or a callable ``strong(i, j) -> bool``."""


class _CountingOracle:
    """Answers strong queries, counts every one and refuses to go past the budget."""

    def __init__(self, strong: StrongSignal, n_vertices: int | None, budget: int | None):
        if callable(strong):
            if n_vertices is None:
                raise ValueError(
                    "a callable strong oracle needs n_vertices (it cannot be inferred)"
                )
            self._ask = lambda i, j: bool(strong(int(i), int(j)))
            self._ask_many = lambda i, js: np.fromiter(
                (bool(strong(int(i), int(j))) for j in js), dtype=bool, count=len(js)
            )
            self.n_vertices = int(n_vertices)
        else:
            matrix = _check_adjacency(strong, "strong")
            if n_vertices is not None and matrix.shape[0] != n_vertices:
                raise ValueError(
                    f"strong adjacency is {matrix.shape[0]}x{matrix.shape[0]} but there are "
                    f"{n_vertices} vertices"
                )
            self._ask = lambda i, j: bool(matrix[i, j])
            self._ask_many = lambda i, js: matrix[i, js]
            self.n_vertices = matrix.shape[0]
        self.budget = budget
        self.n_queries = 0

    def remaining(self) -> float:
        return np.inf if self.budget is None else self.budget - self.n_queries

    def ask(self, i: int, j: int) -> bool:
        if self.remaining() <= 0:
            raise RuntimeError("strong-query budget exhausted")  # callers check first
        self.n_queries += 1
        return self._ask(i, j)

    def ask_many(self, i: int, js: np.ndarray) -> np.ndarray:
        if self.remaining() < len(js):
            raise RuntimeError("strong-query budget exhausted")
        self.n_queries += len(js)
        return self._ask_many(i, js)


def _check_adjacency(adjacency: np.ndarray, name: str) -> np.ndarray:
    matrix = np.asarray(adjacency)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name} must be a square (n, n) matrix, got shape {matrix.shape}")
    if matrix.dtype != bool:
        if not np.all(np.isin(matrix, (0, 1))):
            raise ValueError(f"{name} must be boolean (or 0/1) adjacency")
        matrix = matrix.astype(bool)
    if not np.array_equal(matrix, matrix.T):
        raise ValueError(f"{name} adjacency must be symmetric")
    return matrix


def _check_similarity(weak: np.ndarray) -> np.ndarray:
    matrix = np.asarray(weak, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"weak similarity must be a square (n, n) matrix, got {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("weak similarity contains NaN or inf")
    return matrix


def _check_count(value: int | None, name: str, minimum: int, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _top_k_neighbours(similarity: np.ndarray, k: int) -> np.ndarray:
    """(n, k') indices of each row's k most similar other vertices (ties: lower index first)."""
    n = similarity.shape[0]
    k = min(k, n - 1)
    masked = similarity.astype(np.float64, copy=True)
    np.fill_diagonal(masked, -np.inf)
    return np.argsort(-masked, axis=1, kind="stable")[:, :k]


def cosine_similarity_matrix(X: np.ndarray) -> np.ndarray:
    """Cosine similarity of the rows of X in float64; an all-zero row is similar to nothing."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D (n, d) array, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or inf")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    unit = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    return np.clip(unit @ unit.T, -1.0, 1.0)


_EDGE_RULES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "and": np.logical_and,  # default: binary labels with "or" collapse into two giant clusters
    "or": np.logical_or,  # the paper's literal wording
}


def strong_signal(
    embeddings: np.ndarray, labels: np.ndarray, k: int = 5, edge_rule: str = "and"
) -> np.ndarray:
    """FaLA's strong oracle: same label AND (or OR) one is among the other's top-k cosine
    neighbours. Returns an (n, n) symmetric boolean matrix with a True diagonal."""
    if edge_rule not in _EDGE_RULES:
        raise ValueError(f"edge_rule must be one of {sorted(_EDGE_RULES)}, got {edge_rule!r}")
    _check_count(k, "k", 1, allow_none=False)
    similarity = cosine_similarity_matrix(embeddings)
    labels = np.asarray(labels)
    n = similarity.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match embeddings, got {labels.shape}")
    neighbours = np.zeros((n, n), dtype=bool)
    if n > 1:
        neighbours[np.arange(n)[:, None], _top_k_neighbours(similarity, k)] = True
    neighbours |= neighbours.T
    same_label = labels[:, None] == labels[None, :]
    adjacency = _EDGE_RULES[edge_rule](same_label, neighbours)
    np.fill_diagonal(adjacency, True)
    return adjacency


def disagreement_cost(labels: np.ndarray, adjacency: np.ndarray) -> int:
    """Correlation-clustering cost: + edges cut plus − edges kept inside a cluster,
    counted over unordered pairs."""
    labels = np.asarray(labels)
    adjacency = _check_adjacency(adjacency, "adjacency")
    if labels.shape != (adjacency.shape[0],):
        raise ValueError(f"labels must have shape ({adjacency.shape[0]},), got {labels.shape}")
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), k=1)
    return int(np.count_nonzero(upper & (same != adjacency)))


def pivot_clustering(
    strong: StrongSignal, order: np.ndarray, n_vertices: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """KwikCluster for a fixed pivot order: each still-unclustered vertex in ``order`` becomes
    a pivot and queries every unclustered vertex. Returns (labels, pivots, n_queries); exposed so
    the expectation over orders can be computed exactly on small graphs."""
    oracle = _CountingOracle(strong, n_vertices, budget=None)
    n = oracle.n_vertices
    order = np.asarray(order)
    if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError(f"order must be a permutation of range({n})")
    labels = np.full(n, -1, dtype=np.intp)
    pivots: list[int] = []
    for vertex in order:
        if labels[vertex] >= 0:
            continue
        cluster = len(pivots)
        pivots.append(int(vertex))
        labels[vertex] = cluster
        unclustered = np.flatnonzero(labels < 0)
        if unclustered.size:
            labels[unclustered[oracle.ask_many(vertex, unclustered)]] = cluster
    return labels, np.asarray(pivots, dtype=np.intp), oracle.n_queries


class KwikCluster(BaseEstimator):
    """Random-pivot correlation clustering (expected cost ≤ 3·OPT); queries every pair it
    needs, so it is the query-hungry baseline KwikBucks is measured against."""

    def __init__(self, random_state: int | np.random.Generator | None = None):
        self.random_state = random_state

    def fit(self, strong: StrongSignal, n_vertices: int | None = None) -> KwikCluster:
        """Cluster the strong graph; ``n_vertices`` is needed only for a callable oracle."""
        if not callable(strong):
            strong = _check_adjacency(strong, "strong")
            n_vertices = strong.shape[0] if n_vertices is None else n_vertices
        _check_count(n_vertices, "n_vertices", 0, allow_none=False)
        order = np.random.default_rng(self.random_state).permutation(n_vertices)
        self.labels_, self.pivots_, self.n_queries_ = pivot_clustering(strong, order, n_vertices)
        self.n_clusters_ = len(self.pivots_)
        return self


class KwikBucks(BaseEstimator):
    """Query-efficient correlation clustering (Silwal et al., ICLR 2023).

    Phase 1 samples ``n_pivots`` vertices in random order (default: all n, i.e. a random order
    of every vertex); each joins the first of the earlier pivots, tried by descending weak
    similarity (at most ``max_queries_per_vertex`` strong queries), that the oracle confirms,
    or else becomes a pivot. Phase 2 assigns the unsampled vertices, most confident first
    (highest weak similarity to any pivot), the same way; an unconfirmed vertex is a singleton
    that represents itself. The optional merge phase samples ``merge_queries`` strong queries
    between clusters joined by weak k-NN edges (``merge_knn`` neighbours) and merges at >= 50 %
    positive. No strong query is made past ``query_budget``: vertices that can no longer be
    queried become singletons.
    """

    def __init__(
        self,
        n_pivots: int | None = None,
        max_queries_per_vertex: int = 10,
        query_budget: int | None = None,
        merge: bool = False,
        merge_queries: int = 5,
        merge_knn: int = 5,
        random_state: int | np.random.Generator | None = None,
    ):
        self.n_pivots = n_pivots
        self.max_queries_per_vertex = max_queries_per_vertex
        self.query_budget = query_budget
        self.merge = merge
        self.merge_queries = merge_queries
        self.merge_knn = merge_knn
        self.random_state = random_state

    def fit(self, weak: np.ndarray, strong: StrongSignal) -> KwikBucks:
        """Cluster n vertices given their (n, n) weak similarity and the strong oracle."""
        weak = _check_similarity(weak)
        _check_count(self.n_pivots, "n_pivots", 1, allow_none=True)
        _check_count(self.max_queries_per_vertex, "max_queries_per_vertex", 0, allow_none=False)
        _check_count(self.query_budget, "query_budget", 0, allow_none=True)
        _check_count(self.merge_queries, "merge_queries", 1, allow_none=False)
        _check_count(self.merge_knn, "merge_knn", 1, allow_none=False)
        n = weak.shape[0]
        oracle = _CountingOracle(strong, n, self.query_budget)
        rng = np.random.default_rng(self.random_state)

        n_sampled = n if self.n_pivots is None else min(self.n_pivots, n)
        order = rng.permutation(n)
        cluster_of = np.full(n, -1, dtype=np.intp)
        representatives: list[int] = []  # one per cluster, in creation order
        pivots: list[int] = []  # phase-1 pivots: the only vertices others may join

        def place(vertex: int, may_pivot: bool) -> None:
            target = self._first_confirmed(vertex, pivots, weak, oracle)
            if target is None:
                cluster_of[vertex] = len(representatives)
                representatives.append(vertex)
                if may_pivot:
                    pivots.append(vertex)
            else:
                cluster_of[vertex] = cluster_of[target]

        for vertex in order[:n_sampled]:
            place(int(vertex), may_pivot=True)
        rest = order[n_sampled:]
        if pivots and rest.size:
            confidence = weak[np.ix_(rest, pivots)].max(axis=1)
            rest = rest[np.argsort(-confidence, kind="stable")]
        for vertex in rest:
            place(int(vertex), may_pivot=False)

        representatives_arr = np.asarray(representatives, dtype=np.intp)
        if self.merge and len(representatives) > 1:
            cluster_of, representatives_arr = self._merge_clusters(
                cluster_of, representatives_arr, weak, oracle, rng
            )
        self.labels_ = cluster_of
        self.pivots_ = representatives_arr
        self.n_clusters_ = len(representatives_arr)
        self.n_queries_ = oracle.n_queries
        return self

    def _first_confirmed(
        self, vertex: int, pivots: list[int], weak: np.ndarray, oracle: _CountingOracle
    ) -> int | None:
        """The first weak-ranked pivot the strong oracle links to ``vertex``, if any."""
        if not pivots:
            return None
        candidates = np.asarray(pivots, dtype=np.intp)
        ranked = candidates[np.argsort(-weak[vertex, candidates], kind="stable")]
        for pivot in ranked[: self.max_queries_per_vertex]:
            if oracle.remaining() <= 0:
                return None
            if oracle.ask(vertex, int(pivot)):
                return int(pivot)
        return None

    def _merge_clusters(
        self,
        cluster_of: np.ndarray,
        representatives: np.ndarray,
        weak: np.ndarray,
        oracle: _CountingOracle,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Merge cluster pairs joined by weak k-NN edges when sampled strong queries agree.

        Pairs are visited by their strongest connecting weak edge; the queries are sampled
        uniformly without replacement from the member pairs of the two current (already merged)
        groups. A merged group keeps its earliest cluster's representative."""
        best_edge: dict[tuple[int, int], float] = {}
        neighbours = _top_k_neighbours(weak, self.merge_knn)
        for i, row in enumerate(neighbours):
            for j in row:
                a, b = sorted((int(cluster_of[i]), int(cluster_of[j])))
                if a != b:
                    best_edge[(a, b)] = max(best_edge.get((a, b), -np.inf), weak[i, j])
        candidate_pairs = sorted(best_edge, key=lambda pair: (-best_edge[pair], pair))

        parent = np.arange(len(representatives))
        members = {c: np.flatnonzero(cluster_of == c) for c in range(len(representatives))}

        def root(c: int) -> int:
            while parent[c] != c:
                parent[c] = parent[parent[c]]
                c = int(parent[c])
            return c

        for a, b in candidate_pairs:
            ra, rb = root(a), root(b)
            if ra == rb:
                continue
            if oracle.remaining() <= 0:
                break
            left, right = members[ra], members[rb]
            n_pairs = len(left) * len(right)
            n_asked = int(min(self.merge_queries, n_pairs, oracle.remaining()))
            picks = rng.choice(n_pairs, size=n_asked, replace=False)
            positives = sum(
                oracle.ask(int(left[p // len(right)]), int(right[p % len(right)])) for p in picks
            )
            if 2 * positives >= n_asked:
                keep, gone = min(ra, rb), max(ra, rb)
                parent[gone] = keep
                members[keep] = np.concatenate([members[keep], members.pop(gone)])

        roots = np.array([root(c) for c in range(len(representatives))])
        kept = np.unique(roots)  # earliest-created cluster of each group, in creation order
        relabel = np.searchsorted(kept, roots)
        return relabel[cluster_of], representatives[kept]
