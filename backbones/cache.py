"""Per-process cache of frozen features of PUBLIC documents, keyed by (backbone sha256, doc id).

A simulation process serves many virtual devices that read the same public catalogue (news
articles); each document is encoded once per backbone version here. The FLOPs of every cached
forward are kept beside the vector so each device is still charged as if it ran it itself:
the cache speeds the simulation, not the accounting. Only public documents may be cached.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from backbones.base import Backbone


class CachedFeatures(NamedTuple):
    vectors: np.ndarray  # (n, d) float32
    flops: np.ndarray  # (n,) forward FLOPs per document, charged whether cached or not
    cached_seconds: float  # encode time the cache saved this caller (charged to its fit time)


class FeatureCache:
    """LRU over backbones; per backbone a dict doc id -> (vector, FLOPs, encode seconds)."""

    def __init__(self, max_backbones: int = 3) -> None:
        self.max_backbones = max_backbones
        self._tables: OrderedDict[str, dict[str, tuple[np.ndarray, int, float]]] = OrderedDict()

    def encode(
        self, backbone: Backbone, doc_ids: Sequence[str], texts: Sequence[str]
    ) -> CachedFeatures:
        """Vectors, per-document forward FLOPs and the seconds the cache saved (public docs)."""
        table = self._tables.setdefault(backbone.sha256, {})
        self._tables.move_to_end(backbone.sha256)
        while len(self._tables) > self.max_backbones:
            self._tables.popitem(last=False)
        missing = [i for i, doc in enumerate(doc_ids) if doc not in table]
        hits = [doc for doc in dict.fromkeys(doc_ids) if doc in table]
        cached_seconds = sum(table[doc][2] for doc in hits)
        if missing:
            start = time.perf_counter()
            vectors, flops = backbone.encode_with_flops([texts[i] for i in missing])
            share = flops / max(int(flops.sum()), 1) * (time.perf_counter() - start)
            for row, i in enumerate(missing):
                table[doc_ids[i]] = (vectors[row], int(flops[row]), float(share[row]))
        out = np.empty((len(doc_ids), backbone.hidden_size), dtype=np.float32)
        out_flops = np.empty(len(doc_ids), dtype=np.int64)
        for i, doc in enumerate(doc_ids):
            out[i], out_flops[i], _ = table[doc]
        return CachedFeatures(out, out_flops, cached_seconds)

    def clear(self) -> None:
        self._tables.clear()


PUBLIC_FEATURES = FeatureCache()
"""The process-wide cache of public-document features (see the module docstring)."""
