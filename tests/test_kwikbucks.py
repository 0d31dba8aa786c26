"""KwikCluster / KwikBucks: exact recovery, the 3-approximation, query accounting, budgets."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_similarity

from strategies.fala.kwikbucks import (
    KwikBucks,
    KwikCluster,
    cosine_similarity_matrix,
    disagreement_cost,
    pivot_clustering,
    strong_signal,
)

# ----------------------------------------------------------------------------- helpers


def planted_partition(
    sizes: list[int], seed: int, noise: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth labels, clean strong adjacency, weak similarity high inside / low across)."""
    rng = np.random.default_rng(seed)
    truth = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    strong = truth[:, None] == truth[None, :]
    jitter = rng.uniform(-noise, noise, size=strong.shape)
    weak = np.where(strong, 0.8, 0.1) + (jitter + jitter.T) / 2
    return truth, strong, weak


def random_graph(n: int, rng: np.random.Generator) -> np.ndarray:
    upper = np.triu(rng.random((n, n)) < rng.uniform(0.2, 0.8), k=1)
    adjacency = upper | upper.T
    np.fill_diagonal(adjacency, True)
    return adjacency


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to relabelling: the co-membership matrices agree."""
    return np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :])


def set_partitions(n: int) -> Iterator[np.ndarray]:
    """Every partition of range(n) as a restricted-growth label vector."""

    def grow(prefix: list[int], n_blocks: int) -> Iterator[list[int]]:
        if len(prefix) == n:
            yield prefix
            return
        for block in range(n_blocks + 1):
            yield from grow(prefix + [block], max(n_blocks, block + 1))

    for labels in grow([], 0):
        yield np.asarray(labels)


def check_is_partition(labels: np.ndarray, pivots: np.ndarray, n: int) -> None:
    k = len(pivots)
    assert labels.shape == (n,)
    assert set(labels.tolist()) == set(range(k))  # every vertex in exactly one cluster 0..k-1
    assert len(set(pivots.tolist())) == k
    np.testing.assert_array_equal(labels[pivots], np.arange(k))  # pivot c represents cluster c


# ----------------------------------------------------------------------------- exact recovery


@pytest.mark.parametrize("seed", range(5))
def test_kwikcluster_recovers_planted_partition(seed: int) -> None:
    truth, strong, _ = planted_partition([1, 4, 7, 12], seed)
    fitted = KwikCluster(random_state=seed).fit(strong)
    assert same_partition(fitted.labels_, truth)
    assert fitted.n_clusters_ == 4
    check_is_partition(fitted.labels_, fitted.pivots_, len(truth))


@pytest.mark.parametrize(
    "params",
    [
        {},  # t = n: a random order of every vertex
        {"max_queries_per_vertex": 1},  # only the weak top-1 pivot is ever asked
        {"n_pivots": 20, "max_queries_per_vertex": 2},  # phase 2 assigns the rest
        {"merge": True},
    ],
)
@pytest.mark.parametrize("seed", range(4))
def test_kwikbucks_recovers_planted_partition(params: dict, seed: int) -> None:
    truth, strong, weak = planted_partition([1, 4, 7, 12], seed)
    fitted = KwikBucks(random_state=seed, **params).fit(weak, strong)
    sampled = np.random.default_rng(seed).permutation(len(truth))[: params.get("n_pivots")]
    assert set(truth[sampled]) == set(truth)  # the seeds used here sample every cluster
    assert same_partition(fitted.labels_, truth)
    check_is_partition(fitted.labels_, fitted.pivots_, len(truth))


@pytest.mark.parametrize("seed", range(6))
def test_kwikbucks_clusters_missed_by_the_pivot_sample_become_singletons(seed: int) -> None:
    """Phase 2 only joins phase-1 pivots: a true cluster none of whose vertices was sampled
    cannot be found and its vertices stay singletons; sampled clusters are recovered whole."""
    truth, strong, weak = planted_partition([2, 3, 4, 15], seed)
    n_pivots = 5
    fitted = KwikBucks(n_pivots=n_pivots, random_state=seed).fit(weak, strong)
    sampled = np.random.default_rng(seed).permutation(len(truth))[:n_pivots]
    hit = np.isin(truth, truth[sampled])
    expected = np.where(hit, truth, len(truth) + np.arange(len(truth)))
    assert same_partition(fitted.labels_, expected)


def test_kwikbucks_spends_one_query_per_vertex_when_weak_ranks_perfectly() -> None:
    """With m = 1 and an informative weak signal every non-first vertex asks exactly one
    pivot: its own cluster's (positive) or, for a new pivot, the best wrong one (negative)."""
    truth, strong, weak = planted_partition([3, 5, 8, 8], seed=3)
    fitted = KwikBucks(max_queries_per_vertex=1, random_state=0).fit(weak, strong)
    assert same_partition(fitted.labels_, truth)
    assert fitted.n_queries_ == len(truth) - 1


def test_merge_phase_rebuilds_clusters_from_singletons() -> None:
    """With no queries in phases 1-2 every vertex is a singleton; merging along weak k-NN
    edges (all inside the true clusters here) must rebuild the planted partition."""
    truth, strong, weak = planted_partition([6, 6, 6], seed=1)
    fitted = KwikBucks(
        max_queries_per_vertex=0, merge=True, merge_knn=5, merge_queries=5, random_state=0
    ).fit(weak, strong)
    assert same_partition(fitted.labels_, truth)
    check_is_partition(fitted.labels_, fitted.pivots_, len(truth))
    without_merge = KwikBucks(max_queries_per_vertex=0, random_state=0).fit(weak, strong)
    assert without_merge.n_clusters_ == len(truth) and without_merge.n_queries_ == 0


def test_merge_phase_does_not_merge_on_negative_queries() -> None:
    """Weak k-NN edges that cross true clusters get 0 % positive answers: no merge."""
    truth, strong, _ = planted_partition([5, 5], seed=2)
    rng = np.random.default_rng(0)
    noise = rng.random(strong.shape)
    uninformative = (noise + noise.T) / 2
    fitted = KwikBucks(merge=True, merge_knn=4, random_state=0).fit(uninformative, strong)
    assert same_partition(fitted.labels_, truth)


# ----------------------------------------------------------------------------- 3-approximation


def test_kwikcluster_expected_cost_at_most_three_times_optimum() -> None:
    """Exact expectation over all pivot orders (every permutation), brute-force OPT over all
    set partitions, on 40 seeded random graphs with 3 to 7 vertices."""
    rng = np.random.default_rng(2024)
    strictly_worse = 0
    for _ in range(40):
        n = int(rng.integers(3, 8))
        adjacency = random_graph(n, rng)
        optimum = min(disagreement_cost(labels, adjacency) for labels in set_partitions(n))
        costs = [
            disagreement_cost(pivot_clustering(adjacency, np.array(order))[0], adjacency)
            for order in itertools.permutations(range(n))
        ]
        expected = float(np.mean(costs))
        assert optimum <= expected <= 3 * optimum, (n, adjacency.astype(int), expected, optimum)
        strictly_worse += expected > optimum
    assert strictly_worse > 0  # the sample contains graphs where the bound is not trivial


def test_kwikcluster_fit_is_pivot_clustering_of_a_seeded_order() -> None:
    adjacency = random_graph(12, np.random.default_rng(5))
    fitted = KwikCluster(random_state=7).fit(adjacency)
    labels, pivots, n_queries = pivot_clustering(
        adjacency, np.random.default_rng(7).permutation(12)
    )
    np.testing.assert_array_equal(fitted.labels_, labels)
    np.testing.assert_array_equal(fitted.pivots_, pivots)
    assert fitted.n_queries_ == n_queries


# ----------------------------------------------------------------------------- query count


def expected_kwikcluster_queries(sizes: list[int]) -> float:
    """E[queries] on a clean planted partition with cluster sizes s.

    Derivation: a cluster's pivot is its first vertex in the random order, and it queries
    every vertex still unclustered. (i) Its own s_A − 1 other members always: n − k in total.
    (ii) All s_B members of another cluster B exactly when A's first vertex precedes B's, which
    has probability s_A / (s_A + s_B). Summing both directions of each unordered pair gives
    s_B·s_A/(s_A+s_B) + s_A·s_B/(s_A+s_B) = 2 s_A s_B / (s_A + s_B). Each strong call counts
    once (pivot → vertex); this is the formula in ALGORITHMS.md, exact in expectation.
    """
    within = sum(sizes) - len(sizes)
    across = sum(2 * a * b / (a + b) for a, b in itertools.combinations(sizes, 2))
    return within + across


def test_query_count_formula_is_exact_over_all_orders() -> None:
    sizes = [1, 2, 4]
    _, strong, _ = planted_partition(sizes, seed=0)
    counts = [
        pivot_clustering(strong, np.array(order))[2]
        for order in itertools.permutations(range(sum(sizes)))
    ]
    assert np.mean(counts) == pytest.approx(expected_kwikcluster_queries(sizes), rel=1e-12)


def test_kwikcluster_mean_queries_match_formula() -> None:
    sizes = [1, 2, 3, 5, 9, 12]
    _, strong, _ = planted_partition(sizes, seed=0)
    counts = [KwikCluster(random_state=seed).fit(strong).n_queries_ for seed in range(1500)]
    expected = expected_kwikcluster_queries(sizes)
    assert abs(np.mean(counts) - expected) <= 0.03 * expected


# ----------------------------------------------------------------------------- budget, determinism


def test_kwikbucks_respects_budget_and_partitions_every_vertex() -> None:
    rng = np.random.default_rng(11)
    for trial in range(60):
        n = int(rng.integers(2, 40))
        adjacency = random_graph(n, rng)
        weak = cosine_similarity_matrix(rng.normal(size=(n, 4)))
        budget = int(rng.integers(0, 3 * n))
        calls: list[tuple[int, int]] = []

        def oracle(i: int, j: int, adjacency: np.ndarray = adjacency, calls: list = calls) -> bool:
            calls.append((i, j))
            return bool(adjacency[i, j])

        params = {
            "n_pivots": None if trial % 3 == 0 else int(rng.integers(1, n + 1)),
            "max_queries_per_vertex": int(rng.integers(0, 6)),
            "merge": bool(trial % 2),
            "merge_knn": int(rng.integers(1, 6)),
            "merge_queries": int(rng.integers(1, 6)),
        }
        fitted = KwikBucks(query_budget=budget, random_state=trial, **params).fit(weak, oracle)
        assert fitted.n_queries_ == len(calls) <= budget
        assert all(i != j for i, j in calls)
        check_is_partition(fitted.labels_, fitted.pivots_, n)
        assert fitted.n_clusters_ == len(fitted.pivots_)
        # the matrix oracle gives the same clustering and the same count
        again = KwikBucks(query_budget=budget, random_state=trial, **params).fit(weak, adjacency)
        np.testing.assert_array_equal(again.labels_, fitted.labels_)
        assert again.n_queries_ == fitted.n_queries_


def test_zero_budget_makes_every_vertex_a_singleton() -> None:
    _, strong, weak = planted_partition([4, 4], seed=0)
    fitted = KwikBucks(query_budget=0, merge=True, random_state=0).fit(weak, strong)
    assert fitted.n_queries_ == 0 and fitted.n_clusters_ == 8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kwikbucks_and_kwikcluster_are_deterministic_for_a_seed(seed: int) -> None:
    rng = np.random.default_rng(99)
    adjacency = random_graph(30, rng)
    weak = cosine_similarity_matrix(rng.normal(size=(30, 5)))
    runs = [
        KwikBucks(n_pivots=10, merge=True, random_state=seed).fit(weak, adjacency) for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].labels_, runs[1].labels_)
    np.testing.assert_array_equal(runs[0].pivots_, runs[1].pivots_)
    assert runs[0].n_queries_ == runs[1].n_queries_
    first, second = (KwikCluster(random_state=seed).fit(adjacency) for _ in range(2))
    np.testing.assert_array_equal(first.labels_, second.labels_)
    assert first.n_queries_ == second.n_queries_


def test_different_seeds_give_different_pivot_orders() -> None:
    adjacency = random_graph(30, np.random.default_rng(1))
    pivots = {tuple(KwikCluster(random_state=s).fit(adjacency).pivots_) for s in range(5)}
    assert len(pivots) > 1


# ----------------------------------------------------------------------------- signals, cost


def test_strong_signal_on_a_hand_built_example() -> None:
    # points on a line: 0 and 1 close, 2 and 3 close, far apart from each other
    embeddings = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    labels = np.array([0, 0, 0, 1])
    both = strong_signal(embeddings, labels, k=1, edge_rule="and")
    either = strong_signal(embeddings, labels, k=1, edge_rule="or")
    expected_and = np.eye(4, dtype=bool)
    expected_and[0, 1] = expected_and[1, 0] = True  # neighbours with the same label
    np.testing.assert_array_equal(both, expected_and)
    expected_or = np.eye(4, dtype=bool) | (labels[:, None] == labels[None, :])
    expected_or[2, 3] = expected_or[3, 2] = True  # neighbours, different labels
    np.testing.assert_array_equal(either, expected_or)


def test_strong_signal_neighbours_are_symmetrised() -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(25, 6))
    labels = np.zeros(25, dtype=int)
    adjacency = strong_signal(embeddings, labels, k=3)
    assert np.array_equal(adjacency, adjacency.T) and adjacency.diagonal().all()
    assert np.all(adjacency.sum(axis=1) - 1 >= 3)  # at least its own 3 neighbours


def test_strong_signal_rejects_unknown_edge_rule() -> None:
    with pytest.raises(ValueError, match="edge_rule must be one of"):
        strong_signal(np.eye(3), np.zeros(3), edge_rule="xor")


def test_cosine_similarity_matches_sklearn_and_handles_zero_rows() -> None:
    X = np.random.default_rng(0).normal(size=(10, 4))
    np.testing.assert_allclose(cosine_similarity_matrix(X), cosine_similarity(X), atol=1e-12)
    X[3] = 0.0
    similarity = cosine_similarity_matrix(X)
    assert np.all(np.isfinite(similarity)) and np.all(similarity[3] == 0.0)


def test_disagreement_cost_counts_cut_positives_and_kept_negatives() -> None:
    adjacency = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=bool)
    assert disagreement_cost(np.array([0, 0, 1, 2]), adjacency) == 1  # cuts (1, 2)
    assert disagreement_cost(np.array([0, 0, 0, 1]), adjacency) == 1  # keeps (0, 2)
    assert disagreement_cost(np.array([0, 0, 0, 0]), adjacency) == 4  # keeps all 4 negatives
    assert disagreement_cost(np.arange(4), adjacency) == 2  # cuts both positives


def test_invalid_inputs_are_rejected_with_clear_messages() -> None:
    asymmetric = np.array([[1, 1], [0, 1]], dtype=bool)
    with pytest.raises(ValueError, match="symmetric"):
        KwikCluster().fit(asymmetric)
    with pytest.raises(ValueError, match="n_vertices"):
        KwikCluster().fit(lambda i, j: True)
    with pytest.raises(ValueError, match="2x2 but there are 3"):
        KwikBucks().fit(np.eye(3), np.eye(2, dtype=bool))
    with pytest.raises(ValueError, match="max_queries_per_vertex"):
        KwikBucks(max_queries_per_vertex=-1).fit(np.eye(2), np.eye(2, dtype=bool))
    with pytest.raises(ValueError, match="permutation"):
        pivot_clustering(np.eye(3, dtype=bool), np.array([0, 0, 1]))
