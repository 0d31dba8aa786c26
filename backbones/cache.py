"""Frozen features of documents: public ones shared on disk by every process of a node, a
user's private ones in memory for one message.

A simulation node runs many virtual devices in a few Ray actors, and they all read the same
public catalogue (news articles). ``PublicFeatureStore`` keeps each public document's vector
in a memory-mapped file per encoder, keyed by (encoder identity, document id, hash of its
text), so a document is encoded once per backbone version per node — not once per actor —
and the actors share one copy of the features through the page cache instead of holding one
each.

Every row is written once: a process encodes what is missing without holding any lock, then,
under an exclusive ``flock``, appends the rows still missing to ``rows`` and syncs them before
it commits their ids to ``ids`` (one line each, appended whole). A reader trusts only complete
lines of ``ids``, so a crash at any moment leaves a consistent cache (at worst rows that no id
names, overwritten by the next append). Vectors are bitwise independent of their batch-mates
(``TransformerBackbone`` pads to a fixed length), so whichever process encodes a document, every
device reads the same bits.

The FLOPs and encode seconds of every row are kept beside the vector: each device is charged
as if it had run the forwards itself. The caches speed the simulation, not the accounting.

Privacy: the shared store accepts only ``PublicDocuments``, which ``UserData`` hands out only
for texts marked public; a user's private texts go through ``FeatureCache``, which lives in
the user's own ``UserData`` and dies with it.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import hashlib
import mmap
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from backbones.base import Backbone


class CachedFeatures(NamedTuple):
    vectors: np.ndarray  # (n, d) float32
    flops: np.ndarray  # (n,) forward FLOPs per document, charged whether cached or not
    cached_seconds: float  # encode time the cache saved this caller (charged to its fit time)


class PrivateTextError(ValueError):
    """Private texts were offered to a cache shared across devices."""


@dataclass(frozen=True)
class PublicDocuments:
    """Documents of the public catalogue (ids and texts): the only input the shared store
    takes. Built by ``UserData.public_documents``, which refuses a user's private texts."""

    doc_ids: Sequence[str]
    texts: Sequence[str]

    def __post_init__(self) -> None:
        if len(self.doc_ids) != len(self.texts):
            raise ValueError(f"{len(self.doc_ids)} document ids but {len(self.texts)} texts")


@functools.lru_cache(maxsize=1 << 18)
def _store_key(doc_id: str, text: str) -> str:
    """A document's key in the shared store: its id and a short hash of its text, so a folder
    reused by a run over other data (the same ids, other texts) never serves stale rows.
    Memoized: a process meets the same catalogue documents again and again."""
    return f"{doc_id}\t{hashlib.blake2b(text.encode('utf-8'), digest_size=8).hexdigest()}"


def _encode_missing(backbone: Backbone, texts: Sequence[str]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectors, FLOPs and encode seconds per text (the batch's time split by FLOPs)."""
    start = time.perf_counter()
    vectors, flops = backbone.encode_with_flops(list(texts))
    seconds = flops / max(int(flops.sum()), 1) * (time.perf_counter() - start)
    return vectors, flops, seconds


class FeatureCache:
    """In-memory features of one user's private texts: LRU over backbones, per backbone a dict
    doc id -> (vector, FLOPs, encode seconds). Held by the user's ``UserData`` only."""

    def __init__(self, max_backbones: int = 2) -> None:
        self.max_backbones = max_backbones
        self._tables: OrderedDict[str, dict[str, tuple[np.ndarray, int, float]]] = OrderedDict()

    def encode(self, backbone: Backbone, doc_ids: Sequence[str], texts: Sequence[str]
               ) -> CachedFeatures:
        """Vectors, per-document forward FLOPs and the seconds the cache saved."""
        table = self._tables.setdefault(backbone.sha256, {})
        self._tables.move_to_end(backbone.sha256)
        while len(self._tables) > self.max_backbones:
            self._tables.popitem(last=False)
        missing = [i for i, doc in enumerate(doc_ids) if doc not in table]
        hits = [doc for doc in dict.fromkeys(doc_ids) if doc in table]
        cached_seconds = sum(table[doc][2] for doc in hits)
        if missing:
            vectors, flops, seconds = _encode_missing(backbone, [texts[i] for i in missing])
            for row, i in enumerate(missing):
                table[doc_ids[i]] = (vectors[row], int(flops[row]), float(seconds[row]))
        out = np.empty((len(doc_ids), backbone.hidden_size), dtype=np.float32)
        out_flops = np.empty(len(doc_ids), dtype=np.int64)
        for i, doc in enumerate(doc_ids):
            out[i], out_flops[i], _ = table[doc]
        return CachedFeatures(out, out_flops, cached_seconds)


class _SharedTable:
    """One encoder's rows on disk (``ids``, ``rows``, ``lock``) and this process's view."""

    def __init__(self, folder: Path, hidden_size: int) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.record = np.dtype([("vector", np.float32, (hidden_size,)), ("flops", np.int64),
                                ("seconds", np.float64)])
        self.ids_path, self.rows_path = folder / "ids", folder / "rows"
        self._lock_fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        self.index: dict[str, int] = {}
        self._ids_read = 0  # bytes of ``ids`` parsed into ``index``
        self._rows: np.ndarray | None = None  # a read-only view of the mapped rows

    def close(self) -> None:
        self._rows = None
        os.close(self._lock_fd)

    @contextmanager
    def locked(self, exclusive: bool) -> Iterator[None]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def refresh(self) -> None:
        """Index the ids committed since the last look (complete lines only)."""
        try:
            with open(self.ids_path, "rb") as handle:
                handle.seek(self._ids_read)
                fresh = handle.read()
        except FileNotFoundError:
            return
        complete = fresh[: fresh.rfind(b"\n") + 1]
        for doc in complete.decode("utf-8").splitlines():
            self.index[doc] = len(self.index)
        self._ids_read += len(complete)

    def append(self, doc_ids: list[str], vectors: np.ndarray, flops: np.ndarray,
               seconds: np.ndarray) -> None:
        """Under the exclusive lock: write the rows of the ids still missing, sync, commit."""
        self.refresh()
        fresh = [i for i, doc in enumerate(doc_ids) if doc not in self.index]
        if not fresh:
            return
        records = np.empty(len(fresh), dtype=self.record)
        records["vector"], records["flops"] = vectors[fresh], flops[fresh]
        records["seconds"] = seconds[fresh]
        fd = os.open(self.rows_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, records.tobytes(), len(self.index) * self.record.itemsize)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        with open(self.ids_path, "ab") as handle:
            handle.truncate(self._ids_read)  # a line cut by a crash is not committed
            handle.write("".join(doc_ids[i] + "\n" for i in fresh).encode("utf-8"))
            handle.flush()
            os.fdatasync(handle.fileno())
        self.refresh()

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The records of committed ``rows`` (a copy), mapping the file further if it grew."""
        if not len(rows):
            return np.empty(0, dtype=self.record)
        needed = int(rows.max()) + 1
        if self._rows is None or len(self._rows) < needed:
            with open(self.rows_path, "rb") as handle:
                mapped = mmap.mmap(handle.fileno(), len(self.index) * self.record.itemsize,
                                   access=mmap.ACCESS_READ)
            self._rows = np.frombuffer(mapped, dtype=self.record)
        return self._rows[rows]


class PublicFeatureStore:
    """Features of public documents in memory-mapped files under ``root``, shared by every
    process that points at the same folder (all Ray actors of a node). Without a folder (a
    process that never called ``use``) it works in a private temporary folder."""

    def __init__(self, root: str | Path | None = None, max_open: int = 4) -> None:
        self.root = Path(root) if root is not None else None
        self.max_open = max_open
        self._tables: OrderedDict[str, _SharedTable] = OrderedDict()

    def use(self, root: str | Path) -> None:
        """Share features through ``root`` from now on (a no-op when already there)."""
        root = Path(root).resolve()
        if root != self.root:
            self.clear()
            self.root = root

    def clear(self) -> None:
        """Close the open tables (the files stay: they are the cache)."""
        for table in self._tables.values():
            table.close()
        self._tables.clear()

    @staticmethod
    def key(backbone: Backbone) -> str:
        """The encoder's identity: its weights' sha256, its token budget and width."""
        budget = getattr(backbone, "max_length", 0)
        return f"{backbone.sha256[:40]}-len{budget}-dim{backbone.hidden_size}"

    def _table(self, backbone: Backbone) -> _SharedTable:
        key = self.key(backbone)
        if key not in self._tables:
            if self.root is None:
                self.root = Path(tempfile.mkdtemp(prefix="swapfl-public-features-"))
                atexit.register(shutil.rmtree, self.root, True)
            self._tables[key] = _SharedTable(self.root / key, backbone.hidden_size)
            while len(self._tables) > self.max_open:
                self._tables.popitem(last=False)[1].close()
        self._tables.move_to_end(key)
        return self._tables[key]

    def encode(self, backbone: Backbone, documents: PublicDocuments) -> CachedFeatures:
        """Vectors and per-document FLOPs of public ``documents``, encoding only those no
        process of this node encoded before; ``cached_seconds`` is the encode time of the
        documents found in the store (the caller charges it as its own)."""
        if not isinstance(documents, PublicDocuments):
            raise PrivateTextError(
                "the shared feature store takes PublicDocuments only (UserData."
                "public_documents); a user's private texts never leave its own cache")
        if any("\n" in doc or "\t" in doc for doc in documents.doc_ids):
            raise ValueError("document ids cannot contain a newline or a tab")
        doc_ids = [_store_key(doc, text)
                   for doc, text in zip(documents.doc_ids, documents.texts, strict=True)]
        table = self._table(backbone)
        unique = list(dict.fromkeys(doc_ids))
        if any(key not in table.index for key in unique):  # else: nothing to look up
            with table.locked(exclusive=False):
                table.refresh()
        hits = [doc for doc in unique if doc in table.index]
        missing = [doc for doc in unique if doc not in table.index]
        if missing:
            position = {doc: i for i, doc in enumerate(doc_ids)}
            vectors, flops, seconds = _encode_missing(
                backbone, [documents.texts[position[doc]] for doc in missing])
            with table.locked(exclusive=True):
                table.append(missing, vectors, flops, seconds)
        # committed rows never change: reading them needs no lock
        records = table.read(np.array([table.index[doc] for doc in unique], np.int64))
        where = {doc: i for i, doc in enumerate(unique)}
        positions = np.array([where[doc] for doc in doc_ids], dtype=np.int64)
        cached_seconds = float(records["seconds"][[where[doc] for doc in hits]].sum())
        return CachedFeatures(records["vector"][positions],
                              records["flops"][positions].astype(np.int64), cached_seconds)


PUBLIC_FEATURES = PublicFeatureStore()
"""The process's view of its node's shared public features (the ClientApp points it at the
node's folder; see the module docstring)."""
