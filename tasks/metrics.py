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
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores))


def expected_rank_weights(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per item, the expectation of ``weights[rank - 1]`` over the orders of tied scores.

    Items whose scores tie share a block of ranks, every order of the block equally likely, so
    each one's expected weight is the block's mean weight (ALGORITHMS.md, "Ties"). Without
    ties this is ``weights`` in the ranking by descending score."""
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="stable")
    _, block = np.unique(-scores[order], return_inverse=True)  # block id per ranked position
    means = np.bincount(block, weights=weights) / np.bincount(block)
    out = np.empty(len(scores))
    out[order] = means[block]
    return out


def mrr(labels: np.ndarray, scores: np.ndarray) -> float:
    """Σ y_i / rank_i over the ranking by score, divided by the number of clicks; tied scores
    count the expected reciprocal rank over their orders."""
    labels = np.asarray(labels, dtype=float)
    reciprocal = 1.0 / np.arange(1, len(labels) + 1)
    return float(np.sum(labels * expected_rank_weights(scores, reciprocal)) / np.sum(labels))


def dcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Σ (2^y − 1) / log2(rank + 1) over the top k, in expectation over tied orders."""
    labels = np.asarray(labels, dtype=float)
    ranks = np.arange(1, len(labels) + 1)
    discount = np.where(ranks <= k, 1.0 / np.log2(ranks + 1), 0.0)
    return float(np.sum((2**labels - 1) * expected_rank_weights(scores, discount)))


def ndcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    return dcg(labels, scores, k) / dcg(labels, labels, k)


def news_metrics(labels_per_impression: Sequence[np.ndarray],
                 scores_per_impression: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean AUC / MRR / nDCG@5 / nDCG@10 over impressions with both classes."""
    rows = []
    for labels, scores in zip(labels_per_impression, scores_per_impression, strict=True):
        labels = np.asarray(labels, dtype=float)
        scores = np.asarray(scores, dtype=float)
        if len(labels) != len(scores):
            raise ValueError(f"impression with {len(labels)} labels but {len(scores)} scores")
        if len(labels) == 0 or labels.min() == labels.max():
            continue
        rows.append((auc(labels, scores), mrr(labels, scores), ndcg(labels, scores, 5),
                     ndcg(labels, scores, 10)))
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
