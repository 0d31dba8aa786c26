"""Example selection: valid indices, caps, determinism, and coverage of the user's groups."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.fala.kwikbucks import KwikBucks, cosine_similarity_matrix, strong_signal
from strategies.fala.selection import SELECTORS, SelectionResult, select_examples

CAPPED = ["kwikbucks", "kwikcluster", "kmeans", "fala-k"]  # "all" ignores the cap by design


def blobs(n_per_blob: int = 30, n_blobs: int = 2, d: int = 8, seed: int = 0):
    """Well-separated directions (cosine geometry) with random binary labels inside each."""
    rng = np.random.default_rng(seed)
    centers = np.eye(d)[:n_blobs] * 10.0
    blob = np.repeat(np.arange(n_blobs), n_per_blob)
    embeddings = centers[blob] + rng.normal(size=(len(blob), d))
    labels = rng.integers(0, 2, size=len(blob))
    return embeddings, labels, blob


def assert_valid(result: SelectionResult, n: int) -> None:
    indices = result.indices
    assert np.issubdtype(indices.dtype, np.integer)
    assert indices.ndim == 1 and indices.size >= 1
    assert np.all(np.diff(indices) > 0)  # sorted ascending and unique
    assert indices[0] >= 0 and indices[-1] < n


def test_registry_holds_every_method() -> None:
    assert set(SELECTORS) == {"kwikbucks", "kwikcluster", "kmeans", "all", "fala-k"}


@pytest.mark.parametrize("method", sorted(SELECTORS))
def test_every_method_returns_valid_deterministic_indices(method: str) -> None:
    embeddings, labels, _ = blobs()
    first = select_examples(method, embeddings, labels, random_state=3)
    second = select_examples(method, embeddings, labels, random_state=3)
    assert_valid(first, len(labels))
    np.testing.assert_array_equal(first.indices, second.indices)
    assert first.n_clusters == second.n_clusters
    assert first.n_strong_queries == second.n_strong_queries


@pytest.mark.parametrize("method", CAPPED)
@pytest.mark.parametrize("max_examples", [1, 5, 12])
def test_capped_methods_respect_max_examples(method: str, max_examples: int) -> None:
    embeddings, labels, _ = blobs()
    result = select_examples(method, embeddings, labels, max_examples=max_examples, random_state=0)
    assert_valid(result, len(labels))
    assert len(result.indices) <= max_examples


def test_all_returns_every_example_without_queries() -> None:
    embeddings, labels, _ = blobs()
    result = select_examples("all", embeddings, labels, max_examples=5)
    np.testing.assert_array_equal(result.indices, np.arange(len(labels)))
    assert result.n_strong_queries == 0 and result.n_clusters == 0


def test_fala_k_is_exactly_k_and_contains_the_kwikbucks_pivots() -> None:
    embeddings, labels, _ = blobs()
    pivots = select_examples("kwikbucks", embeddings, labels, max_examples=None, random_state=4)
    k = min(len(pivots.indices) + 7, len(labels))
    fala_k = select_examples("fala-k", embeddings, labels, max_examples=k, random_state=4)
    assert len(fala_k.indices) == k
    assert set(pivots.indices) <= set(fala_k.indices)
    assert fala_k.n_strong_queries == pivots.n_strong_queries


def test_kwikbucks_pivots_cover_every_label_and_blob() -> None:
    """With the AND rule a strong edge needs the same label and k-NN proximity (which never
    crosses well-separated blobs), so every (label, blob) cell holds at least one cluster."""
    embeddings, labels, blob = blobs(n_per_blob=40)
    result = select_examples("kwikbucks", embeddings, labels, max_examples=None, random_state=0)
    chosen = set(zip(labels[result.indices].tolist(), blob[result.indices].tolist(), strict=True))
    assert chosen == set(zip(labels.tolist(), blob.tolist(), strict=True))
    assert result.n_clusters == len(result.indices)  # one pivot per cluster when uncapped


def test_a_cap_is_label_stratified_then_largest_clusters_first() -> None:
    embeddings, labels, _ = blobs()
    strong = strong_signal(embeddings, labels, k=5)
    clustering = KwikBucks(random_state=np.random.default_rng(2)).fit(
        cosine_similarity_matrix(embeddings), strong
    )
    sizes = np.bincount(clustering.labels_)
    pivot_labels = labels[clustering.pivots_]
    result = select_examples("kwikbucks", embeddings, labels, max_examples=4, random_state=2)
    chosen = clustering.labels_[result.indices]
    for label in (0, 1):  # two per label, each label's two largest clusters
        mine = chosen[labels[result.indices] == label]
        assert sorted(sizes[mine], reverse=True) == sorted(
            sizes[pivot_labels == label], reverse=True)[:2]


def test_a_cap_keeps_rare_positives_like_mind_clicks() -> None:
    """~4 % clicks: under a cap far below the cluster count, the largest-clusters-first rule
    would keep only non-clicks; the stratified cap keeps clicks."""
    rng = np.random.default_rng(5)
    embeddings = rng.normal(size=(300, 16))
    labels = np.zeros(300, dtype=np.int64)
    labels[rng.choice(300, size=12, replace=False)] = 1
    for method in ("kwikbucks", "kwikcluster", "fala-k"):
        result = select_examples(method, embeddings, labels, max_examples=10, random_state=0)
        assert len(result.indices) == 10
        assert result.n_clusters > 10  # the cap binds
        assert 1 <= labels[result.indices].sum() <= 5, method  # clicks kept, in turn


def test_kwikbucks_respects_the_query_budget() -> None:
    embeddings, labels, _ = blobs()
    free = select_examples("kwikbucks", embeddings, labels, random_state=0)
    budget = free.n_strong_queries // 3
    limited = select_examples(
        "kwikbucks", embeddings, labels, query_budget=budget, max_examples=None, random_state=0
    )
    assert 0 < limited.n_strong_queries <= budget
    assert_valid(limited, len(labels))


def test_kmeans_picks_one_member_per_well_separated_blob() -> None:
    embeddings, labels, blob = blobs(n_per_blob=15, n_blobs=4)
    result = select_examples("kmeans", embeddings, labels, n_clusters=4, random_state=0)
    assert sorted(blob[result.indices].tolist()) == [0, 1, 2, 3]
    assert result.n_clusters == 4 and result.n_strong_queries == 0
    from_kwikbucks = select_examples("kmeans", embeddings, labels, random_state=0)
    assert from_kwikbucks.n_strong_queries > 0  # k came from a KwikBucks run


def test_or_rule_gives_fewer_clusters_than_and() -> None:
    embeddings, labels, _ = blobs()
    both = select_examples("kwikcluster", embeddings, labels, max_examples=None, random_state=0)
    either = select_examples(
        "kwikcluster", embeddings, labels, max_examples=None, edge_rule="or", random_state=0
    )
    assert either.n_clusters < both.n_clusters


def test_invalid_requests_raise_clear_errors() -> None:
    embeddings, labels, _ = blobs()
    with pytest.raises(ValueError, match=r"must be one of \['all', 'fala-k', 'kmeans'"):
        select_examples("random", embeddings, labels)
    with pytest.raises(ValueError, match="labels must have shape"):
        select_examples("kwikbucks", embeddings, labels[:-1])
    with pytest.raises(ValueError, match="max_examples"):
        select_examples("kwikbucks", embeddings, labels, max_examples=0)
    with pytest.raises(ValueError, match="edge_rule"):
        select_examples("kwikbucks", embeddings, labels, edge_rule="xor")
