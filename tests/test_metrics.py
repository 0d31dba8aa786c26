"""Ranking metrics against values computed by hand (MIND scorer semantics)."""

import math

import numpy as np
import pytest

from tasks.metrics import auc, mrr, ndcg, news_metrics


def test_click_ranked_first():
    labels, scores = np.array([1, 0, 0]), np.array([0.9, 0.1, 0.5])
    assert auc(labels, scores) == 1.0
    assert mrr(labels, scores) == 1.0
    assert ndcg(labels, scores, 5) == 1.0


def test_click_ranked_second():
    labels, scores = np.array([1, 0, 0]), np.array([0.5, 0.9, 0.1])
    assert auc(labels, scores) == 0.5  # beats one of two negatives
    assert mrr(labels, scores) == 0.5
    assert ndcg(labels, scores, 5) == pytest.approx(1 / math.log2(3))


def test_two_clicks():
    labels, scores = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.1, 0.2])
    # ranking: c0 (click), c1, c3, c2 (click) -> rr = (1 + 1/4) / 2
    assert mrr(labels, scores) == pytest.approx((1 + 0.25) / 2)
    ideal = 1 + 1 / math.log2(3)
    assert ndcg(labels, scores, 10) == pytest.approx((1 + 1 / math.log2(5)) / ideal)
    assert ndcg(labels, scores, 2) == pytest.approx(1 / ideal)


def test_single_class_impressions_are_skipped():
    out = news_metrics([np.array([1, 0]), np.array([1, 1]), np.array([0, 0])],
                       [np.array([0.2, 0.1]), np.array([0.3, 0.4]), np.array([0.1, 0.2])])
    assert out["impressions"] == 1 and out["auc"] == 1.0


def test_no_usable_impression_gives_nan():
    out = news_metrics([np.array([1, 1])], [np.array([0.1, 0.2])])
    assert out["impressions"] == 0 and math.isnan(out["auc"])


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        news_metrics([np.array([1, 0])], [np.array([0.1, 0.2, 0.3])])


def test_all_ties_give_the_expectation_over_orders():
    """One click among m equal scores: MRR = (1/m)·Σ 1/r, nDCG@k = mean discount of the top k
    over the m positions / 1, AUC = ½ — whatever the list order."""
    m = 6
    for click in range(m):
        labels = np.zeros(m)
        labels[click] = 1
        scores = np.full(m, 0.3)
        assert mrr(labels, scores) == pytest.approx(sum(1 / r for r in range(1, m + 1)) / m)
        assert ndcg(labels, scores, 5) == pytest.approx(
            sum(1 / math.log2(r + 1) for r in range(1, 6)) / m)
        assert auc(labels, scores) == 0.5


def test_partial_ties_only_average_within_their_block():
    labels = np.array([0, 1, 0, 1])
    scores = np.array([0.9, 0.5, 0.5, 0.1])  # ranks: 1, {2, 3}, 4
    assert mrr(labels, scores) == pytest.approx(((1 / 2 + 1 / 3) / 2 + 1 / 4) / 2)
    reordered = [1, 2, 0, 3]
    assert mrr(labels[reordered], scores[reordered]) == mrr(labels, scores)
    assert ndcg(labels[reordered], scores[reordered], 3) == pytest.approx(
        ndcg(labels, scores, 3))


def test_tie_expectation_equals_brute_force_over_every_list_order():
    import itertools

    labels = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.2, 0.7, 0.2, 0.2, 0.9])

    mrrs, ndcgs = [], []
    for order in itertools.permutations(range(5)):
        order = list(order)
        ranked = labels[order][np.argsort(-scores[order], kind="stable")]
        mrrs.append(np.sum(ranked / np.arange(1, 6)) / ranked.sum())
        gains = (2.0 ** ranked - 1)[:3] / np.log2(np.arange(2, 5))
        ideal = np.sum(1 / np.log2(np.arange(2, 4)))
        ndcgs.append(gains.sum() / ideal)
    assert mrr(labels, scores) == pytest.approx(np.mean(mrrs))
    assert ndcg(labels, scores, 3) == pytest.approx(np.mean(ndcgs))


@pytest.mark.parametrize("seed", range(40))
def test_auc_equals_sklearn_with_and_without_ties(seed):
    """The rank-sum AUC is sklearn's roc_auc_score, ties counted ½, on random impressions
    (some with heavy ties: scores drawn from a few values)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    labels = rng.integers(0, 2, n)
    labels[0], labels[1] = 0, 1  # both classes
    scores = rng.normal(size=n) if seed % 2 else rng.integers(0, 3, n).astype(float)
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_refuses_a_single_class():
    with pytest.raises(ValueError, match="both"):
        auc(np.array([1, 1]), np.array([0.1, 0.2]))
