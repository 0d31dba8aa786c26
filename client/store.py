"""A device's private on-disk store: arrays (safetensors) + JSON metadata, written atomically.

Per key, ``<key>.json`` points to a content-addressed arrays file ``<key>.<sha16>.safetensors``
and records its full sha256. Saving writes the arrays file, then swaps the pointer with an
atomic rename, then removes the previous arrays file — so a crash at any moment leaves the old
or the new state complete. A file that fails its checksum is an error, never a silent reset.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

FORMAT = 1
_KEY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class CorruptStateError(RuntimeError):
    """A stored state does not match its checksum or cannot be parsed."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(target: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())
    try:
        os.replace(tmp.name, target)
    except BaseException:
        Path(tmp.name).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


class PrivateStore:
    """Private state of one device, one entry per key (e.g. ``tracks/fala``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _pointer(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key.split("/"):
            raise ValueError(f"invalid store key {key!r}: use letters, digits, - _ . and / "
                             "for sub-folders (no '..', not absolute)")
        return self.root / f"{key}.json"

    def save(self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> int:
        """Store a state atomically; returns the bytes it occupies on disk."""
        pointer = self._pointer(key)
        try:
            meta_json = json.dumps(dict(meta), sort_keys=True)
        except TypeError as err:
            raise TypeError(f"store key {key!r}: metadata must be JSON-serialisable ({err})") \
                from err
        pointer.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # (np.ascontiguousarray would turn 0-d arrays into 1-d ones)
        tensors = {name: np.asarray(value).copy(order="C") for name, value in arrays.items()}
        with tempfile.NamedTemporaryFile(dir=pointer.parent, delete=False, suffix=".tmp") as tmp:
            staging = Path(tmp.name)
        try:
            save_file(tensors, staging)
            with open(staging, "rb+") as handle:
                os.fsync(handle.fileno())
                handle.seek(0)
                digest = hashlib.sha256(handle.read()).hexdigest()
            arrays_file = pointer.parent / f"{pointer.name[:-5]}.{digest[:16]}.safetensors"
            os.replace(staging, arrays_file)
        finally:
            staging.unlink(missing_ok=True)
        previous = self._arrays_file_or_none(pointer)
        record = {"format": FORMAT, "meta": json.loads(meta_json),
                  "arrays_file": arrays_file.name, "sha256": digest}
        data = json.dumps(record, sort_keys=True).encode()
        _write_atomic(pointer, data)
        if previous is not None and previous != arrays_file:
            previous.unlink(missing_ok=True)
        return arrays_file.stat().st_size + len(data)

    def _arrays_file_or_none(self, pointer: Path) -> Path | None:
        try:
            return pointer.parent / json.loads(pointer.read_text())["arrays_file"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _record(self, key: str) -> tuple[Path, dict]:
        pointer = self._pointer(key)
        if not pointer.is_file():
            raise KeyError(f"no stored state {key!r} under {self.root}")
        try:
            record = json.loads(pointer.read_text())
            return pointer.parent / record["arrays_file"], record
        except (ValueError, KeyError, TypeError) as err:
            raise CorruptStateError(
                f"{pointer}: unreadable metadata ({err}); the state is corrupt — restore it "
                "from a backup or delete the device's store to start over") from err

    def load(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays_file, record = self._record(key)
        try:
            data = arrays_file.read_bytes()
        except OSError as err:
            raise CorruptStateError(f"{arrays_file}: missing arrays file for {key!r}") from err
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise CorruptStateError(
                f"{arrays_file}: sha256 does not match its metadata; the state of {key!r} is "
                "corrupt — restore it from a backup or delete the device's store")
        try:
            arrays = load_file(arrays_file)
        except Exception as err:  # safetensors raises its own error types
            raise CorruptStateError(f"{arrays_file}: cannot parse arrays ({err})") from err
        return arrays, record["meta"]

    def exists(self, key: str) -> bool:
        return self._pointer(key).is_file()

    def nbytes(self, key: str) -> int:
        arrays_file, _ = self._record(key)
        return arrays_file.stat().st_size + self._pointer(key).stat().st_size

    def delete(self, key: str) -> None:
        if self.exists(key):
            arrays_file, _ = self._record(key)
            self._pointer(key).unlink()
            arrays_file.unlink(missing_ok=True)

    def keys(self) -> list[str]:
        return sorted(str(p.relative_to(self.root))[:-5] for p in self.root.rglob("*.json"))
