"""The node's shared store of public-document features: written once, read by every process,
crash-consistent, and closed to private texts."""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from backbones.base import Backbone
from backbones.cache import PrivateTextError, PublicDocuments, PublicFeatureStore
from tasks.base import UserData


class CountingBackbone(Backbone):
    """A deterministic text encoder that counts the texts it encodes (the store's contract is
    only ``encode_with_flops``, ``sha256``, ``hidden_size`` and ``max_length``)."""

    arch, hidden_size, sha256, max_length = "test", 8, "ab" * 32, 16

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode_with_flops(self, texts):
        self.encoded.extend(texts)
        vectors = np.stack([np.frombuffer(hashlib.sha256(t.encode()).digest()[:8],
                                          dtype=np.uint8) / 7.0 for t in texts])
        return vectors.astype(np.float32), np.array([100 + len(t) for t in texts], dtype=np.int64)

    def encode(self, texts):
        return self.encode_with_flops(texts)[0]

    def tunable(self, texts, contexts=None, max_length=None):  # pragma: no cover
        raise NotImplementedError

    def split_top(self, texts, layers=1):  # pragma: no cover
        raise NotImplementedError


def _docs(numbers) -> PublicDocuments:
    return PublicDocuments([f"N{i}" for i in numbers], [f"article number {i}" for i in numbers])


def test_each_document_is_encoded_once_and_read_back_bitwise(tmp_path):
    backbone = CountingBackbone()
    first = PublicFeatureStore(tmp_path).encode(backbone, _docs(range(10)))
    assert first.cached_seconds == 0.0 and len(backbone.encoded) == 10
    # another process's view (a fresh store object on the same folder), overlapping documents
    # and a repeated one
    second = PublicFeatureStore(tmp_path).encode(backbone, _docs([5, 6, 12, 5, 13]))
    assert backbone.encoded[10:] == ["article number 12", "article number 13"]
    direct_vectors, direct_flops = CountingBackbone().encode_with_flops(
        _docs([5, 6, 12, 5, 13]).texts)
    assert np.array_equal(second.vectors, direct_vectors)
    assert np.array_equal(second.flops, direct_flops)  # charged for every document it reads
    assert second.cached_seconds > 0  # the encode time of the hits 5 and 6, charged too
    ids = _committed_ids(next(tmp_path.iterdir()))
    assert sorted(ids) == sorted(f"N{i}" for i in [*range(10), 12, 13])


def _committed_ids(folder: Path) -> list[str]:
    return [line.split("\t")[0] for line in (folder / "ids").read_text().splitlines()]


def test_the_same_id_with_another_text_is_another_document(tmp_path):
    """A folder reused by a run over other data (same ids, other texts) never serves the
    old rows."""
    backbone = CountingBackbone()
    PublicFeatureStore(tmp_path).encode(backbone, _docs(range(3)))
    other = PublicDocuments(["N0", "N1"], ["another world's article", "article number 1"])
    found = PublicFeatureStore(tmp_path).encode(backbone, other)
    assert backbone.encoded[3:] == ["another world's article"]
    assert np.array_equal(found.vectors, CountingBackbone().encode(other.texts))


def _encode_in_process(root: str, numbers: list[int], out: multiprocessing.Queue) -> None:
    found = PublicFeatureStore(root).encode(CountingBackbone(), _docs(numbers))
    out.put((numbers[0], found.vectors.tobytes()))


def test_processes_writing_at_once_commit_each_document_once(tmp_path):
    # fork: the children only hash and write (no torch op), and start in milliseconds
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_encode_in_process,
                               args=(str(tmp_path), list(range(start, start + 300)), queue))
               for start in (0, 100, 200)]
    for worker in workers:
        worker.start()
    results = dict(queue.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    folder = next(tmp_path.iterdir())
    ids = _committed_ids(folder)
    assert len(ids) == len(set(ids)) == 500
    for start, vectors in results.items():
        expected = CountingBackbone().encode(_docs(range(start, start + 300)).texts)
        assert vectors == expected.tobytes()
    # every committed row holds its own document's vector
    store = PublicFeatureStore(tmp_path)
    everything = store.encode(CountingBackbone(), _docs(range(500)))
    assert np.array_equal(everything.vectors,
                          CountingBackbone().encode_with_flops(_docs(range(500)).texts)[0])


def test_a_line_cut_by_a_crash_is_not_committed(tmp_path):
    backbone = CountingBackbone()
    PublicFeatureStore(tmp_path).encode(backbone, _docs(range(3)))
    folder = next(tmp_path.iterdir())
    with open(folder / "ids", "ab") as handle:  # a writer died mid-line
        handle.write(b"N9")
    with open(folder / "rows", "ab") as handle:  # ...after writing a half row
        handle.write(b"\0" * 7)
    found = PublicFeatureStore(tmp_path).encode(backbone, _docs([9, 1]))
    assert backbone.encoded[3:] == ["article number 9"]  # N9 was not trusted
    assert np.array_equal(found.vectors,
                          CountingBackbone().encode_with_flops(_docs([9, 1]).texts)[0])
    assert _committed_ids(folder) == ["N0", "N1", "N2", "N9"]


def _user(public: bool) -> UserData:
    return UserData(user_id="u", doc_ids=["secret-1", "secret-2"],
                    texts=["my private diary", "my bank details"], finetune=None, test=None,
                    texts_are_public=public)


def test_private_texts_never_enter_the_shared_store(tmp_path):
    store = PublicFeatureStore(tmp_path)
    with pytest.raises(PrivateTextError):
        _user(public=False).public_documents([0, 1])
    with pytest.raises(PrivateTextError):  # only the explicit public type is accepted
        store.encode(CountingBackbone(), (["secret-1"], ["my private diary"]))
    assert list(Path(tmp_path).iterdir()) == []
    assert _user(public=True).public_documents([1]).doc_ids == ["secret-2"]


def test_private_features_stay_in_the_users_own_cache(tmp_path, task_world):
    """A classification user's texts are private: encoding them leaves the node's store
    untouched and lives in the user's own cache."""
    from backbones.cache import PUBLIC_FEATURES

    world = task_world("aggression")
    data = world.data
    assert not data.texts_are_public
    PUBLIC_FEATURES.use(tmp_path / "node")
    try:
        for model in world.models:
            model.features(data, np.arange(len(data.doc_ids)))
    finally:
        PUBLIC_FEATURES.clear()
    assert not (tmp_path / "node").exists() or not any((tmp_path / "node").rglob("*"))
    assert data.private_cache is not None
