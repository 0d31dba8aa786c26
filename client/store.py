"""A device's private on-disk store: arrays (safetensors) + JSON metadata, written atomically.

Per key, ``<key>.json`` points to a content-addressed arrays file ``<key>.<sha16>.safetensors``
and records the arrays file's full sha256::

    {"format": 1, "meta": {...}, "arrays_file": "<name>.<sha16>.safetensors", "sha256": "..."}

Saving writes the arrays to a temporary file in the same folder, fsyncs it and renames it to its
content-addressed name; then it writes the pointer the same way (temp file, fsync, atomic
rename); only then does it remove the previous arrays file. A crash at any moment therefore
leaves either the complete old state or the complete new state loadable (at worst an orphaned
arrays file, removed by the next successful save of that key). A state that fails its checksum
or cannot be parsed raises ``CorruptStateError`` — it is never silently reset.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_bytes
from safetensors.numpy import save as save_bytes

from tasks.files import atomic_write

FORMAT = 1
_KEY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REMEDY = "restore the device's store from a backup, or delete this key to start it over"


class CorruptStateError(RuntimeError):
    """A stored state does not match its checksum or cannot be parsed."""


def _arrays_pattern(stem: str) -> re.Pattern[str]:
    return re.compile(re.escape(stem) + r"\.[0-9a-f]{16}\.safetensors")


class PrivateStore:
    """Private state of one device, one entry per key (e.g. ``tracks/fala``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.before_commit: Callable[[str], None] | None = None
        """Called with the key between writing a state's arrays and switching its pointer to
        them: where a crash leaves the old state loadable (fault injection uses it)."""

    # -- paths -----------------------------------------------------------------------------

    def _pointer(self, key: str) -> Path:
        if (not isinstance(key, str) or not _KEY.match(key)
                or any(part in (".", "..") for part in key.split("/"))):
            raise ValueError(f"invalid store key {key!r}: use letters, digits, '-', '_', '.' and "
                             "'/' for sub-folders (no '.' or '..' parts, not absolute)")
        return self.root / f"{key}.json"

    def _record(self, key: str) -> tuple[Path, dict[str, Any]]:
        """The pointer's content, validated, and the arrays file it names."""
        pointer = self._pointer(key)
        if not pointer.is_file():
            raise KeyError(f"no stored state {key!r} under {self.root}")
        try:
            record = json.loads(pointer.read_bytes())
        except (OSError, ValueError) as err:
            raise CorruptStateError(
                f"{pointer}: unreadable metadata ({err}); the state of {key!r} is corrupt — "
                f"{_REMEDY}") from err
        problem = None
        if not isinstance(record, dict):
            problem = "not a JSON object"
        elif record.get("format") != FORMAT:
            problem = f"format {record.get('format')!r}, expected {FORMAT}"
        elif not isinstance(record.get("meta"), dict):
            problem = "'meta' is missing or not an object"
        elif not isinstance(record.get("sha256"), str) or not _SHA256.match(record["sha256"]):
            problem = "'sha256' is missing or not a sha256 hex digest"
        elif (not isinstance(record.get("arrays_file"), str)
              or not _arrays_pattern(pointer.name[:-5]).fullmatch(record["arrays_file"])):
            problem = "'arrays_file' is missing or does not name this key's arrays file"
        if problem is not None:
            raise CorruptStateError(
                f"{pointer}: unreadable metadata ({problem}); the state of {key!r} is corrupt — "
                f"{_REMEDY}")
        return pointer.parent / record["arrays_file"], record

    # -- API -------------------------------------------------------------------------------

    def save(self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> int:
        """Store a state atomically; returns the bytes written (arrays file + metadata)."""
        pointer = self._pointer(key)
        try:
            meta_plain = json.loads(json.dumps(dict(meta)))
        except (TypeError, ValueError) as err:
            raise TypeError(f"store key {key!r}: metadata must be JSON-serialisable ({err})") \
                from err
        # copy(order="C") makes views contiguous and keeps 0-d arrays 0-d
        tensors = {str(name): np.asarray(value).copy(order="C") for name, value in arrays.items()}
        try:
            blob = save_bytes(tensors)
        except Exception as err:  # safetensors raises its own error type
            raise TypeError(f"store key {key!r}: arrays cannot be stored ({err})") from err
        digest = hashlib.sha256(blob).hexdigest()

        pointer.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        stem = pointer.name[:-5]
        arrays_file = pointer.parent / f"{stem}.{digest[:16]}.safetensors"
        atomic_write(arrays_file, blob)
        if self.before_commit is not None:
            self.before_commit(key)
        data = json.dumps({"format": FORMAT, "meta": meta_plain, "arrays_file": arrays_file.name,
                           "sha256": digest}, sort_keys=True).encode()
        atomic_write(pointer, data)
        # the new state is durable: drop the previous arrays file and any orphan of a crash
        pattern = _arrays_pattern(stem)
        for old in pointer.parent.glob(f"{stem}.*.safetensors"):
            if old.name != arrays_file.name and pattern.fullmatch(old.name):
                old.unlink(missing_ok=True)
        return len(blob) + len(data)

    def load(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The stored arrays and metadata; ``KeyError`` if absent, ``CorruptStateError`` if bad."""
        arrays_file, record = self._record(key)
        try:
            blob = arrays_file.read_bytes()
        except OSError as err:
            raise CorruptStateError(
                f"{arrays_file}: the arrays file of {key!r} is missing or unreadable ({err}) — "
                f"{_REMEDY}") from err
        if hashlib.sha256(blob).hexdigest() != record["sha256"]:
            raise CorruptStateError(
                f"{arrays_file}: sha256 does not match its metadata; the state of {key!r} is "
                f"corrupt — {_REMEDY}")
        try:
            arrays = load_bytes(blob)
        except Exception as err:  # safetensors raises its own error type
            raise CorruptStateError(
                f"{arrays_file}: cannot parse the arrays of {key!r} ({err}) — {_REMEDY}") from err
        return dict(arrays), record["meta"]

    def exists(self, key: str) -> bool:
        return self._pointer(key).is_file()

    def nbytes(self, key: str) -> int:
        """Bytes the state occupies on disk (arrays file + metadata)."""
        arrays_file, _ = self._record(key)
        return arrays_file.stat().st_size + self._pointer(key).stat().st_size

    def delete(self, key: str) -> None:
        """Remove a state (also a corrupt one); a no-op if absent."""
        pointer = self._pointer(key)
        pointer.unlink(missing_ok=True)
        stem = pointer.name[:-5]
        pattern = _arrays_pattern(stem)
        if pointer.parent.is_dir():
            for old in pointer.parent.glob(f"{stem}.*.safetensors"):
                if pattern.fullmatch(old.name):
                    old.unlink(missing_ok=True)

    def keys(self) -> list[str]:
        """Stored keys, sorted (``/`` separates sub-folders)."""
        return sorted(p.relative_to(self.root).as_posix()[:-5] for p in self.root.rglob("*.json")
                      if p.is_file())
