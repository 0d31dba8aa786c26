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
