"""Retrieval over one user's own labelled history, and a deterministic profile of that user:
the input augmentation of PerPLM's hard prompt and of OPPU (ALGORITHMS.md).

A user's *history* is the fine-tune split in chronological order: item ``position`` is the
example's row, ``document`` the text it scores (``Examples.scored_documents``) and ``label`` its
label written as text (``UserData.label_names``). One BM25 index (bm25s, English stop words)
covers the history's distinct documents; a query is another of the user's texts.

Decisions (each a choice the papers leave open):

- Items whose BM25 score is 0 (no shared word) are never retrieved: they carry no evidence of
  similarity and would only spend the token budget, so a context may hold fewer than k items.
- Ties in score go to the more recent item (the larger position): recent behaviour is the better
  guess of current taste, and the order is then fully deterministic.
- An item that renders exactly like one already chosen (same document; with labels, same
  document and label) is skipped: news shows one article in several impressions.
- A context lists its items least similar first, most similar last: encoders truncate a long
  input from the left, so the budget drops the least similar evidence first.
- Training contexts never look ahead. A document encoded for training sees only items strictly
  earlier than the first *unit* (``Examples.units``) that reads it: not its own label, not a
  later one, and not the label of an alternative of the same question (LaMP-1) or of another
  candidate of the same impression (news). At prediction every history item may be used,
  except the queried document itself.

Everything here is built per call from one device's data and dropped afterwards: nothing is
module-global, nothing is cached across users.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer

from tasks.base import Examples, UserData

ITEM_SEPARATOR = " | "
"""Between retrieved items (and between the profile and the items) in a context string."""

_STOPWORDS = "en"


@dataclass(frozen=True)
class HistoryItem:
    """One labelled example of the user's fine-tune split."""

    position: int  # row in the fine-tune split (chronological order)
    document: int  # index into ``UserData.texts`` of the text it scores
    label: str  # the label's name


def _tokens(text: str) -> list[str]:
    """BM25 tokens of one text: lower-cased words of 2+ characters, English stop words out."""
    return bm25s.tokenize([text], stopwords=_STOPWORDS, return_ids=False,
                          show_progress=False)[0]


def join_context(parts: Sequence[str]) -> str:
    """The non-empty ``parts`` joined by ``ITEM_SEPARATOR`` (empty string if none)."""
    return ITEM_SEPARATOR.join(part for part in parts if part)


def label_text(data: UserData, label: float) -> str:
    """The name of a label value, with an error that names the user when it has none."""
    index = int(label)
    if not 0 <= index < len(data.label_names):
        raise ValueError(f"user {data.user_id}: label {index} has no name in label_names "
                         f"{data.label_names}")
    return data.label_names[index]


def first_unit_starts(examples: Examples) -> dict[int, int]:
    """For every document the examples read, the row where the first unit reading it starts.

    A training context for that document may use only items before this row (see the module
    docstring); a unit is the smallest group a chronological split keeps whole."""
    units = np.asarray(examples.units())
    if len(units) == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, units[1:] != units[:-1]])
    bounds = np.r_[starts, len(units)]
    first: dict[int, int] = {}
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        for doc in examples.subset(np.arange(start, stop)).documents():
            first.setdefault(int(doc), int(start))
    return first


class HistoryRetriever(BaseEstimator):
    """BM25 over one user's fine-tune history: ``HistoryRetriever(k=4).fit(data)``.

    ``k`` items per context; ``with_labels`` writes each item as ``[label] text`` (OPPU)
    instead of the bare text (PerPLM's hard prompt).

    Learned attributes: ``items_`` (the history, chronological), ``documents_`` (the distinct
    indexed documents), ``index_`` (the bm25s retriever; None when no history text has an
    indexable word), ``first_unit_start_`` (see ``first_unit_starts``) and ``texts_`` (the
    user's texts, kept to read queries and write contexts).
    """

    def __init__(self, k: int = 4, with_labels: bool = False) -> None:
        self.k = k
        self.with_labels = with_labels

    def fit(self, data: UserData) -> HistoryRetriever:
        if self.k < 0:
            raise ValueError(f"k must be >= 0, got {self.k}")
        examples = data.finetune
        scored = np.asarray(examples.scored_documents(), dtype=np.int64)
        labels = np.asarray(examples.labels)
        self.items_ = [HistoryItem(row, int(doc), label_text(data, label))
                       for row, (doc, label) in enumerate(zip(scored, labels, strict=True))]
        self.texts_ = data.texts
        self.documents_ = np.unique(scored)
        self._item_positions = np.arange(len(self.items_), dtype=np.int64)
        self._item_documents = scored
        self._item_slots = np.searchsorted(self.documents_, scored)  # item -> indexed row
        corpus = bm25s.tokenize([data.texts[d] for d in self.documents_], stopwords=_STOPWORDS,
                                show_progress=False)
        self.index_: bm25s.BM25 | None = None
        if corpus.vocab:  # bm25s cannot index an empty vocabulary (stop words only)
            self.index_ = bm25s.BM25()
            self.index_.index(corpus, show_progress=False)
        self.first_unit_start_ = first_unit_starts(examples)
        return self

    # -- scoring -------------------------------------------------------------------------------

    def query_scores(self, text: str) -> np.ndarray:
        """BM25 score of every indexed document (``documents_``) for a query text; all zero
        when the query has no indexed word."""
        scores = np.zeros(len(self.documents_), dtype=np.float64)
        if self.index_ is None:
            return scores
        ids = self.index_.get_tokens_ids([t for t in _tokens(text) if t])
        if ids:
            scores[:] = self.index_.get_scores(ids)
        return scores

    def item_scores(self, doc: int) -> np.ndarray:
        """BM25 score of every history item (``items_``) for the user's text ``doc``."""
        return self.query_scores(self.texts_[doc])[self._item_slots]

    def retrieve(self, doc: int, k: int, before: int | None = None) -> list[HistoryItem]:
        """The ``k`` items most similar to text ``doc``, most similar first.

        Never an item of ``doc`` itself, never an item scoring 0; with ``before``, only items
        at positions strictly before it. Ties go to the more recent item."""
        if not self.items_ or k <= 0:
            return []
        scores = self.item_scores(doc)
        allowed = (self._item_documents != doc) & (scores > 0)
        if before is not None:
            allowed &= self._item_positions < before
        candidates = np.flatnonzero(allowed)
        # lexsort: last key is primary -> score descending, then position descending
        order = candidates[np.lexsort((-self._item_positions[candidates],
                                       -scores[candidates]))]
        chosen: list[HistoryItem] = []
        seen: set[tuple[int, str] | int] = set()
        for row in order:
            item = self.items_[row]
            key = (item.document, item.label) if self.with_labels else item.document
            if key in seen:
                continue
            seen.add(key)
            chosen.append(item)
            if len(chosen) == k:
                break
        return chosen

    # -- contexts ------------------------------------------------------------------------------

    def render(self, item: HistoryItem) -> str:
        """How an item reads in a context: ``[label] text`` or the text alone."""
        text = self.texts_[item.document]
        return f"[{item.label}] {text}" if self.with_labels else text

    def context(self, doc: int, before: int | None = None) -> str:
        """The retrieved items of ``doc`` as one string, most similar LAST (left truncation
        drops the least similar first)."""
        items = self.retrieve(doc, self.k, before)
        return join_context([self.render(item) for item in reversed(items)])

    def contexts(self, docs: Sequence[int] | np.ndarray, training: bool) -> list[str]:
        """One context per document to encode. ``training``: ``docs`` are fine-tune texts and
        each sees only items before the first unit that reads it (a document no fine-tune
        example reads gets none); otherwise every history item is allowed."""
        return [self.context(doc, self.first_unit_start_.get(doc, 0) if training else None)
                for doc in map(int, docs)]


# -- profile ---------------------------------------------------------------------------------


def _percent(count: int, total: int) -> int:
    """Whole percent, halves rounded up (Python's round would send 12.5 to 12)."""
    return math.floor(100 * count / total + 0.5)


def top_terms(texts: Sequence[str], n_terms: int = 10) -> list[str]:
    """The ``n_terms`` terms of largest summed TF-IDF weight over ``texts`` (sklearn defaults,
    English stop words), ties alphabetical; none when no text has a word left."""
    if n_terms <= 0 or not texts:
        return []
    vectorizer = TfidfVectorizer(stop_words="english")
    try:
        weights = vectorizer.fit_transform(list(texts))
    except ValueError:  # "empty vocabulary": every word is a stop word
        return []
    summed = np.asarray(weights.sum(axis=0)).ravel()
    terms = vectorizer.get_feature_names_out()
    # rounding makes sums that differ only by float noise real ties (then alphabetical)
    ranked = sorted(zip(np.round(summed, 9), terms, strict=True), key=lambda t: (-t[0], t[1]))
    return [str(term) for _, term in ranked[:n_terms]]


def profile_text(data: UserData, n_terms: int = 10) -> str:
    """A deterministic user profile (OPPU's, without an LLM): the label rates of the fine-tune
    split, in label order so every user's profile has the same layout, and the user's top
    TF-IDF terms over every fine-tune text (news: the clicked history too).

    e.g. ``"label rates: skipped 88%, clicked 12%; top terms: football, market"``."""
    labels = np.asarray(data.finetune.labels)
    parts = []
    if len(labels):
        counts = np.zeros(len(data.label_names), dtype=np.int64)
        for label in labels:
            label_text(data, label)  # an unnamed label fails here, naming the user
            counts[int(label)] += 1
        rates = ", ".join(f"{name} {_percent(int(count), len(labels))}%"
                          for name, count in zip(data.label_names, counts, strict=True))
        parts.append(f"label rates: {rates}")
    terms = top_terms([data.texts[d] for d in data.finetune.documents()], n_terms)
    if terms:
        parts.append(f"top terms: {', '.join(terms)}")
    return "; ".join(parts)
