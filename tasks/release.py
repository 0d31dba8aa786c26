"""A released global model as files: manifest + head weights (+ server-trained backbone).

The server writes releases into a content-addressed store (same config + data + seed -> same
id, so reruns reuse them); devices open them and verify every sha256 before use. A release
names its task; the head is that task's ``TaskHead`` and strategies reach it only through
``ReleasedModel.design`` (the personal-matrix design of tasks/base.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from backbones.base import Backbone
from backbones.cache import PUBLIC_FEATURES, CachedFeatures, FeatureCache
from backbones.registry import load_backbone, packaged_path
from tasks.base import Design, Examples, Task, TaskHead, UserData
from tasks.files import atomic_write
from tasks.registry import get_task

MANIFEST = "manifest.json"
# A release on the wire (message record names shared by the server and the devices):
RELEASE_ORDER = "release"  # ConfigRecord: release-id, version, seed (+ releases: shared store)
RELEASE_FILES = "release-files"  # ArrayRecord: path inside the release -> its bytes (uint8)
RELEASE_INDEX = "release-index"  # ConfigRecord: the device's manifest and each file's sha256
HEAD_FILE = "head.safetensors"
BACKBONE_DIR = "backbone"


class ReleaseIntegrityError(RuntimeError):
    """A release on disk does not match the hashes its manifest promises."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


@dataclass
class ReleaseManifest:
    """Public description of one version: what a device needs to install and verify it."""

    release_id: str
    version: str  # e.g. "bert@2"
    index: int
    name: str
    arch: str
    task: str
    backbone: dict[str, Any]  # loader, source ("package" | "release" | "path"), path, sha256...
    head: dict[str, Any]  # config, file, sha256, bytes
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def downlink_bytes(self) -> int:
        """Bytes a device receives for this version (backbone weights + head)."""
        return int(self.backbone.get("bytes", 0)) + int(self.head["bytes"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReleaseManifest:
        return cls(**json.loads(text))


def write_release(
    root: Path, manifest: ReleaseManifest, head: TaskHead, backbone_dir: Path | None = None
) -> ReleaseManifest:
    """Write head weights + manifest under ``root/<release_id>`` (manifest last, atomically).

    ``backbone_dir`` is a server-trained backbone already saved inside the release folder.
    """
    folder = Path(root) / manifest.release_id
    folder.mkdir(parents=True, exist_ok=True)
    head_path = folder / HEAD_FILE
    save_file({k: v.detach().numpy().copy() for k, v in head.state_dict().items()}, head_path)
    manifest.head.update(
        config=head.config(), file=HEAD_FILE, sha256=file_sha256(head_path),
        bytes=head_path.stat().st_size,
    )
    if backbone_dir is not None:
        manifest.backbone["bytes"] = tree_bytes(backbone_dir)
    atomic_write(folder / MANIFEST, manifest.to_json())
    return manifest


def read_manifest(root: Path, release_id: str) -> ReleaseManifest | None:
    path = Path(root) / release_id / MANIFEST
    return ReleaseManifest.from_json(path.read_text()) if path.is_file() else None


class ReleasedModel:
    """A release installed on a device: frozen backbone + the task's global head, verified."""

    def __init__(self, manifest: ReleaseManifest, backbone: Backbone, head: TaskHead,
                 task: Task) -> None:
        self.manifest = manifest
        self.backbone = backbone
        self.head = head
        self.task = task

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def dim(self) -> int:
        """The personal dimension (θ's size)."""
        return int(self.head.dim)

    def features(self, data: UserData, docs: np.ndarray) -> CachedFeatures:
        """Backbone features for some of the user's texts (other rows left zero), the forward
        FLOPs per requested text, and the encode seconds a cache saved (to be added to the
        caller's fit time). Only public documents go through the node's shared store; a
        user's private texts go through the user's own cache, held by ``data`` alone."""
        docs = np.asarray(docs, dtype=np.int64)
        out = np.zeros((len(data.doc_ids), self.backbone.hidden_size), dtype=np.float32)
        if data.texts_are_public:
            found = PUBLIC_FEATURES.encode(self.backbone, data.public_documents(docs))
        else:
            if data.private_cache is None:
                data.private_cache = FeatureCache(max_backbones=2)
            found = data.private_cache.encode(self.backbone, [data.doc_ids[i] for i in docs],
                                              [data.texts[i] for i in docs])
        out[docs] = found.vectors
        return found._replace(vectors=out)

    def design(self, data: UserData, batch: Examples, cost: Any | None = None) -> Design:
        """The frozen design (numpy) of ``batch`` under this version; with ``cost`` (a
        ``CostReport``) the forwards of every text used are charged, cached or not."""
        found = self.features(data, batch.documents())
        if cost is not None:
            cost.backbone_forwards += len(found.flops)
            cost.forward_flops += int(found.flops.sum())
            cost.fit_seconds += found.cached_seconds
        with torch.no_grad():
            return self.head.design(torch.from_numpy(found.vectors), batch).numpy()


_OPEN: OrderedDict[tuple[str, str], ReleasedModel] = OrderedDict()


def open_release(root: Path, release_id: str, max_open: int = 3) -> ReleasedModel:
    """Load and verify a release (kept open per process: releases are public and read-only)."""
    key = (str(Path(root).resolve()), release_id)
    if key in _OPEN:
        _OPEN.move_to_end(key)
        return _OPEN[key]
    folder = Path(root) / release_id
    manifest = read_manifest(root, release_id)
    if manifest is None:
        raise FileNotFoundError(f"release {release_id} not found under {root}")
    head_path = folder / manifest.head["file"]
    if file_sha256(head_path) != manifest.head["sha256"]:
        raise ReleaseIntegrityError(f"{head_path}: sha256 differs from the manifest; refusing it")
    spec = manifest.backbone
    path = str(folder / BACKBONE_DIR) if spec["source"] == "release" else spec.get("path")
    backbone = load_backbone(spec["loader"], path, max_length=int(spec.get("max_length", 64)))
    if backbone.sha256 != spec["sha256"]:
        raise ReleaseIntegrityError(
            f"backbone of {manifest.version} has sha256 {backbone.sha256[:12]}…, the manifest "
            f"promises {spec['sha256'][:12]}…; the installed weights differ from the release"
        )
    task = get_task(manifest.task)
    head = task.head_class()(**manifest.head["config"])
    head.load_state_dict({k: torch.from_numpy(np.asarray(v))
                          for k, v in load_file(head_path).items()})
    model = ReleasedModel(manifest, backbone, head.eval(), task)
    _OPEN[key] = model
    while len(_OPEN) > max_open:
        _OPEN.popitem(last=False)
    return model


# -- releases over the wire --------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseBundle:
    """A release as the files a device installs, each with its sha256: what a deployment
    sends inline. The manifest is the one the device installs: its backbone is part of the
    release (``source = "release"``), whatever the server loaded it from."""

    release_id: str
    manifest: ReleaseManifest
    files: dict[str, Path]  # path inside the installed folder -> the server's file
    sha256: dict[str, str]

    @property
    def bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files.values())


def _backbone_source(folder: Path, spec: Mapping[str, Any]) -> Path:
    if spec["source"] == "release":
        return folder / BACKBONE_DIR
    if spec["source"] == "package":
        return packaged_path(spec["loader"])
    return Path(spec["path"])


def release_bundle(root: Path, release_id: str) -> ReleaseBundle:
    """Every file of a release, ready to send: head, backbone weights and tokenizer (from the
    release folder, the offline package or the user's path), and the device's manifest."""
    manifest = read_manifest(root, release_id)
    if manifest is None:
        raise FileNotFoundError(f"release {release_id} not found under {root}")
    folder = Path(root) / release_id
    files = {manifest.head["file"]: folder / manifest.head["file"]}
    source = _backbone_source(folder, manifest.backbone)
    members = [source] if source.is_file() else sorted(p for p in source.rglob("*")
                                                       if p.is_file())
    for path in members:
        relative = path.name if path == source else path.relative_to(source).as_posix()
        files[f"{BACKBONE_DIR}/{relative}"] = path
    installed = ReleaseManifest(**{**asdict(manifest),
                                   "backbone": {**manifest.backbone, "source": "release",
                                                "path": None}})
    return ReleaseBundle(release_id, installed, files,
                         {name: _cached_sha256(path) for name, path in files.items()})


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime: int) -> str:
    return file_sha256(Path(path))


def _cached_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_of(str(path), stat.st_size, stat.st_mtime_ns)


def has_release(cache: Path, release_id: str) -> bool:
    """Whether a device's release cache holds this release (complete: manifest last)."""
    return (Path(cache) / release_id / MANIFEST).is_file()


def _safe_member(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ReleaseIntegrityError(f"release file name {name!r} is not a relative path")
    return name


def install_release(cache: Path, manifest_json: str, files: Mapping[str, bytes],
                    sha256: Mapping[str, str]) -> Path:
    """Install a release received over the wire into a device's own cache: every file must
    match its announced sha256 (and nothing unannounced may come), the folder appears
    atomically (a crash leaves no half release), and the manifest is written last."""
    manifest = ReleaseManifest.from_json(manifest_json)
    if set(files) != set(sha256):
        raise ReleaseIntegrityError(
            f"release {manifest.release_id}: files {sorted(set(files) ^ set(sha256))} arrived "
            "without a hash or a hash without its file")
    cache = Path(cache)
    target = cache / manifest.release_id
    if has_release(cache, manifest.release_id):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".install-{manifest.release_id}-", dir=cache))
    try:
        for name, data in files.items():
            if hashlib.sha256(data).hexdigest() != sha256[name]:
                raise ReleaseIntegrityError(f"release {manifest.release_id}: {name} does not "
                                            "match its sha256; refusing the release")
            path = staging / _safe_member(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        atomic_write(staging / MANIFEST, manifest.to_json())
        for path in staging.rglob("*"):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier attempt
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
