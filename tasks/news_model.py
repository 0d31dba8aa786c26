"""News recommendation model: news encoder + attention user encoder + personal diagonal Λ.

Score of a candidate news v for a user u: ``z = uᵀ Λ v = θ · (u ⊙ v)`` with Λ = diag(θ);
θ = 1 is exactly the global model. ``v = tanh(W f + b)`` projects the backbone's pooled vector
``f``; ``u`` is an additive-attention pooling of the user's history vectors (NRMS style).
Framework-free (no Flower): used by the server for global training and by devices. On the
task contract (tasks/base.py) the design of a pair is ``left = u``, ``right = v``, offset 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tasks.base import Design, HeadTrainingConfig, TaskHead, UserData
from tasks.metrics import news_metrics
from tasks.news import Impression, NewsArticle


@dataclass
class NewsBatch:
    """Impressions flattened to (history, candidate, label) pairs over a document index space.

    ``history[i]`` lists document indices of impression i's clicked history (-1 = padding);
    pair p scores document ``candidates[p]`` for impression ``impression[p]``.
    """

    history: np.ndarray  # (n_impressions, H) int64, -1 padded
    candidates: np.ndarray  # (n_pairs,) int64
    impression: np.ndarray  # (n_pairs,) int64
    labels: np.ndarray  # (n_pairs,) float32

    @property
    def n_pairs(self) -> int:
        return len(self.candidates)

    def __len__(self) -> int:
        return len(self.candidates)

    def documents(self) -> np.ndarray:
        """Sorted indices of every document the batch touches (candidates and histories)."""
        used = np.concatenate([self.candidates, self.history[self.history >= 0]])
        return np.unique(used)

    def scored_documents(self) -> np.ndarray:
        return self.candidates

    def units(self) -> np.ndarray:
        """Impressions: a validation tail takes whole impressions (their AUC needs all)."""
        return self.impression

    def subset(self, pairs: np.ndarray) -> NewsBatch:
        """The batch restricted to some pairs (impressions renumbered, histories kept)."""
        pairs = np.asarray(pairs, dtype=np.int64)
        kept, inverse = np.unique(self.impression[pairs], return_inverse=True)
        return NewsBatch(
            history=self.history[kept],
            candidates=self.candidates[pairs],
            impression=inverse.astype(np.int64),
            labels=self.labels[pairs],
        )


def build_batch(
    impressions: Sequence[Impression], doc_index: dict[str, int], max_history: int = 50
) -> NewsBatch:
    """Flatten labelled impressions; keeps the most recent ``max_history`` history clicks."""
    labelled = [imp for imp in impressions if imp.labels is not None]
    width = max([min(len(imp.history), max_history) for imp in labelled] + [1])
    history = np.full((len(labelled), width), -1, dtype=np.int64)
    candidates, owner, labels = [], [], []
    for row, imp in enumerate(labelled):
        recent = imp.history[-max_history:]
        history[row, : len(recent)] = [doc_index[d] for d in recent]
        candidates += [doc_index[d] for d in imp.candidates]
        owner += [row] * len(imp.candidates)
        labels += list(imp.labels)
    return NewsBatch(
        history=history,
        candidates=np.asarray(candidates, dtype=np.int64),
        impression=np.asarray(owner, dtype=np.int64),
        labels=np.asarray(labels, dtype=np.float32),
    )


def build_user_data(
    user_id: str,
    news: Mapping[str, NewsArticle],
    finetune: Sequence[Impression],
    test: Sequence[Impression],
) -> UserData:
    """Index the documents one user touches and build its two batches. The documents are the
    public catalogue's articles, so their features may be cached across devices."""
    doc_ids = sorted(
        {d for imp in [*finetune, *test] for d in (*imp.history, *imp.candidates)}
    )
    doc_index = {d: i for i, d in enumerate(doc_ids)}
    return UserData(
        user_id=user_id,
        doc_ids=doc_ids,
        texts=[news[d].text for d in doc_ids],
        finetune=build_batch(finetune, doc_index),
        test=build_batch(test, doc_index),
        texts_are_public=True,
        label_names=("skipped", "clicked"),
    )


class NewsHead(TaskHead):
    """The task head on top of a backbone's pooled vectors (global; Λ is applied by θ)."""

    n_outputs = 1  # one logit per (impression, candidate) pair

    def __init__(self, in_dim: int, dim: int = 64, attention_dim: int = 32) -> None:
        super().__init__()
        self.in_dim, self.dim, self.attention_dim = in_dim, dim, attention_dim
        self.project = nn.Linear(in_dim, dim)
        self.attention = nn.Sequential(
            nn.Linear(dim, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1, bias=False)
        )

    def news_vectors(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.project(features))

    def user_vectors(self, doc_vectors: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Attention pooling over each impression's history; an empty history gives u = 0."""
        mask = history >= 0
        vectors = doc_vectors[history.clamp(min=0)]  # (n, H, dim)
        scores = self.attention(vectors).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # all-masked rows -> 0
        return (weights.unsqueeze(-1) * vectors).sum(dim=1)

    def users_and_news(
        self, features: torch.Tensor, batch: NewsBatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per pair, the user vector u and the candidate's news vector v (n_pairs, dim) each."""
        doc_vectors = self.news_vectors(features)
        users = self.user_vectors(doc_vectors, torch.as_tensor(batch.history))
        return users[torch.as_tensor(batch.impression)], doc_vectors[
            torch.as_tensor(batch.candidates)
        ]

    def design(self, features: torch.Tensor, batch: NewsBatch) -> Design:
        """Per pair: left = u, right = v (one output), offset 0; the pair's clustering
        vector is e = u ⊙ v (what FaLA regresses on)."""
        users, news = self.users_and_news(features, batch)
        return Design(users.unsqueeze(1), news.unsqueeze(1),
                      torch.zeros(len(batch), 1, dtype=users.dtype), users * news)

    def global_logits(self, features: torch.Tensor, batch: NewsBatch) -> torch.Tensor:
        """z = uᵀv per pair, as the global training scores candidates."""
        users, news = self.users_and_news(features, batch)
        return (users * news).sum(-1, keepdim=True)

    def config(self) -> dict[str, int]:
        return {"in_dim": self.in_dim, "dim": self.dim, "attention_dim": self.attention_dim}


def batch_metrics(batch: NewsBatch, logits: np.ndarray) -> dict[str, float]:
    """MIND-scorer metrics over the batch's impressions; ``logits`` (n_pairs,) or (n, 1)."""
    logits = np.asarray(logits).reshape(-1)
    labels = [batch.labels[batch.impression == i] for i in range(len(batch.history))]
    scores = [logits[batch.impression == i] for i in range(len(batch.history))]
    return news_metrics(labels, scores)


# --- global training (server side, public data only) -------------------------------------


def click_samples(
    batch: NewsBatch, negatives: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For every click: the impression and [click, K non-clicks] (sampled with replacement
    when an impression has fewer than K), the standard MIND training recipe."""
    rows, groups = [], []
    for p in np.flatnonzero(batch.labels > 0.5):
        imp = batch.impression[p]
        pool = batch.candidates[(batch.impression == imp) & (batch.labels < 0.5)]
        if len(pool) == 0:
            continue
        negs = rng.choice(pool, size=negatives, replace=len(pool) < negatives)
        rows.append(imp)
        groups.append(np.concatenate([[batch.candidates[p]], negs]))
    return np.asarray(rows, dtype=np.int64), np.asarray(groups, dtype=np.int64).reshape(
        -1, negatives + 1
    )


def train_global_head(
    features: np.ndarray,
    train: NewsBatch,
    valid: NewsBatch | None,
    config: HeadTrainingConfig,
    progress: Callable[[str], None] | None = None,
) -> tuple[NewsHead, dict[str, float]]:
    """Train the head on public clicks (softmax over 1 click + K negatives), frozen features.

    Returns the head and validation metrics (AUC etc. on held-out public impressions).
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    head = NewsHead(features.shape[1], config.dim)
    optimizer = torch.optim.Adam(head.parameters(), lr=config.lr)
    feats = torch.from_numpy(features)
    history = torch.as_tensor(train.history)
    for epoch in range(config.epochs):
        rows, groups = click_samples(train, config.negatives, rng)
        order = rng.permutation(len(rows))
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            take = order[start : start + config.batch_size]
            docs = torch.as_tensor(np.unique(np.concatenate([groups[take].ravel(),
                                                             train.history[rows[take]].ravel()])))
            docs = docs[docs >= 0]
            # Project only the documents this step touches (remapped to a compact index).
            local = torch.full((len(features),), -1, dtype=torch.long)
            local[docs] = torch.arange(len(docs))
            vectors = head.news_vectors(feats[docs])
            hist = history[torch.as_tensor(rows[take])]
            hist = torch.where(hist >= 0, local[hist.clamp(min=0)], hist)
            users = head.user_vectors(vectors, hist)
            cands = vectors[local[torch.as_tensor(groups[take])]]  # (b, K+1, dim)
            logits = (users.unsqueeze(1) * cands).sum(-1)
            loss = nn.functional.cross_entropy(logits, torch.zeros(len(take), dtype=torch.long))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(take)
        if progress:
            progress(f"epoch {epoch + 1}/{config.epochs} loss {total / max(len(rows), 1):.4f}")
    head.eval()
    metrics: dict[str, float] = {}
    if valid is not None and valid.n_pairs:
        with torch.no_grad():
            logits = head.global_logits(torch.from_numpy(features), valid)
        metrics = batch_metrics(valid, logits.numpy())
    return head, metrics
