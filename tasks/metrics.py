"""Metrics: news ranking with the official MIND scorer's semantics, and classification.

News, per impression: AUC, MRR, nDCG@5, nDCG@10; averaged over impressions, skipping
impressions whose labels are all one class (the scorer cannot rank them). Tied scores never
take their order from the list: AUC counts a tied pair ½, MRR and nDCG take the expectation
over the orders of the tied items. Classification:
accuracy, F1 of the positive class (two classes), macro-F1 over the classes present in the
truth or the predictions (sklearn's convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


class TiedRanking:
    """One list ranked by descending score, tied scores sharing a block of ranks, every order
    of a block equally likely (ALGORITHMS.md, "Ties"). Built once per impression and shared
    by its metrics."""

    def __init__(self, scores: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=float)
        self.order = np.argsort(-scores, kind="stable")
        ranked = scores[self.order]
        self.block = np.cumsum(np.r_[True, ranked[1:] != ranked[:-1]]) - 1  # per position
        self.sizes = np.bincount(self.block)

    def expected(self, weights: np.ndarray) -> np.ndarray:
        """Per item, the expectation of ``weights[rank - 1]`` over the orders of tied scores:
        its block's mean weight. Without ties, ``weights`` in ranking order."""
        means = np.bincount(self.block, weights=weights) / self.sizes
        out = np.empty(len(self.order))
        out[self.order] = means[self.block]
        return out


def expected_rank_weights(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per item, the expectation of ``weights[rank - 1]`` over the orders of tied scores."""
    return TiedRanking(scores).expected(np.asarray(weights, dtype=float))


def _auc(labels: np.ndarray, ranking: TiedRanking) -> float:
    """ROC AUC as the Mann-Whitney statistic: the share of (clicked, skipped) pairs ordered
    correctly, a tied pair counting ½ (exactly sklearn's ``roc_auc_score``, tested against it;
    sklearn's input validation cost 5 ms per impression, most of a device's evaluation)."""
    n = len(labels)
    positive = labels > 0
    n_pos = int(positive.sum())
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both a clicked and a skipped candidate")
    ascending = n + 1 - ranking.expected(np.arange(1.0, n + 1))  # mean rank, ascending
    return (float(ascending[positive].sum()) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _mrr(labels: np.ndarray, ranking: TiedRanking) -> float:
    reciprocal = 1.0 / np.arange(1, len(labels) + 1)
    return float(np.sum(labels * ranking.expected(reciprocal)) / np.sum(labels))


def _discount(n: int, k: int) -> np.ndarray:
    ranks = np.arange(1, n + 1)
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1), 0.0)


def _ndcg(labels: np.ndarray, ranking: TiedRanking, k: int) -> float:
    gains = 2**labels - 1
    discount = _discount(len(labels), k)
    ideal = float(np.sum(np.sort(gains)[::-1] * discount))  # ties among equal gains: no matter
    return float(np.sum(gains * ranking.expected(discount))) / ideal


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, tied pairs counting ½ (see ``_auc``)."""
    return _auc(np.asarray(labels, dtype=float), TiedRanking(scores))


def mrr(labels: np.ndarray, scores: np.ndarray) -> float:
    """Σ y_i / rank_i over the ranking by score, divided by the number of clicks; tied scores
    count the expected reciprocal rank over their orders."""
    return _mrr(np.asarray(labels, dtype=float), TiedRanking(scores))


def dcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Σ (2^y − 1) / log2(rank + 1) over the top k, in expectation over tied orders."""
    labels = np.asarray(labels, dtype=float)
    return float(np.sum((2**labels - 1) * TiedRanking(scores).expected(
        _discount(len(labels), k))))


def ndcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    return _ndcg(np.asarray(labels, dtype=float), TiedRanking(scores), k)


def news_metrics(labels_per_impression: Sequence[np.ndarray],
                 scores_per_impression: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean AUC / MRR / nDCG@5 / nDCG@10 over impressions with both classes (one ranking per
    impression, shared by its four metrics)."""
    rows = []
    for labels, scores in zip(labels_per_impression, scores_per_impression, strict=True):
        labels = np.asarray(labels, dtype=float)
        scores = np.asarray(scores, dtype=float)
        if len(labels) != len(scores):
            raise ValueError(f"impression with {len(labels)} labels but {len(scores)} scores")
        if len(labels) == 0 or labels.min() == labels.max():
            continue
        ranking = TiedRanking(scores)
        rows.append((_auc(labels, ranking), _mrr(labels, ranking), _ndcg(labels, ranking, 5),
                     _ndcg(labels, ranking, 10)))
    if not rows:
        nan = float("nan")
        return {"auc": nan, "mrr": nan, "ndcg5": nan, "ndcg10": nan, "impressions": 0}
    mean = np.mean(np.asarray(rows), axis=0)
    return {"auc": float(mean[0]), "mrr": float(mean[1]), "ndcg5": float(mean[2]),
            "ndcg10": float(mean[3]), "impressions": len(rows)}


def classification_metrics(truth: np.ndarray, predicted: np.ndarray, n_classes: int
                           ) -> dict[str, float]:
    """Accuracy, F1 of class 1 (binary only) and macro-F1; ``examples`` counted."""
    truth = np.asarray(truth, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if truth.shape != predicted.shape:
        raise ValueError(f"{truth.shape} labels but {predicted.shape} predictions")
    if len(truth) == 0:
        nan = float("nan")
        return {"accuracy": nan, "f1": nan, "macro-f1": nan, "examples": 0}
    out = {"accuracy": float(accuracy_score(truth, predicted)),
           "macro-f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
           "examples": len(truth)}
    if n_classes == 2:
        out["f1"] = float(f1_score(truth, predicted, pos_label=1, average="binary",
                                   zero_division=0))
    return out
