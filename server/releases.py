"""Building global releases: backbone (+ server-side pretraining) + the task's head trained on
public data.

Releases are content-addressed: the id hashes everything that determines the weights (code
format, task, backbone source, training settings, public data, seed), so a rerun with the same
configuration reuses the release instead of training again. Only ``<data-dir>/public/`` is
ever read here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.common.logger import log

from backbones.base import Backbone
from backbones.registry import PACKAGED, SERVER_TRAINED, load_backbone, loader_for_path
from server.progress import ProgressLine
from simulations.settings import ScheduleEntry, Settings
from tasks.registry import get_task
from tasks.release import (
    BACKBONE_DIR,
    ReleaseManifest,
    file_sha256,
    read_manifest,
    tree_bytes,
    write_release,
)

RELEASE_FORMAT = 3  # bump when release contents change for the same configuration
ENCODE_CHUNK = 256


def public_data_sha256(data_dir: Path) -> str:
    """Hash of every file of the public part (names and contents)."""
    public = Path(data_dir) / "public"
    digest = hashlib.sha256()
    for path in sorted(p for p in public.rglob("*") if p.is_file()):
        digest.update(path.relative_to(public).as_posix().encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def release_id(entry: ScheduleEntry, settings: Settings, data_sha: str) -> str:
    """Hash of everything that determines the release's weights."""
    described: dict[str, Any] = {
        "format": RELEASE_FORMAT, "task": settings.task, "index": entry.index,
        "name": entry.name, "path": entry.path, "data": data_sha,
        "max_length": settings.max_length, "training": settings.head_training().__dict__,
    }
    if entry.path is not None:
        stat = Path(entry.path).stat()
        described["path_stat"] = [stat.st_size, stat.st_mtime_ns]
    if entry.path is None and entry.name in SERVER_TRAINED:
        described["pretrain"] = settings.pretrain().__dict__
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:20]


def _obtain_backbone(entry: ScheduleEntry, settings: Settings, texts: list[str],
                     folder: Path) -> tuple[Backbone, dict[str, Any]]:
    """The backbone for a schedule entry: a user path, offline package, or trained here."""
    if entry.path is not None:
        loader = loader_for_path(entry.path)
        spec = {"loader": loader, "source": "path", "path": entry.path}
        path: str | None = entry.path
    elif entry.name in PACKAGED:
        spec = {"loader": PACKAGED[entry.name], "source": "package", "path": None}
        path = None
    elif entry.name in SERVER_TRAINED:
        from backbones.roberta_pretrain import pretrain_roberta

        config = settings.pretrain()
        log(INFO, "[%s] pretraining RoBERTa (masked LM) on %d public texts, %d steps, "
            "hidden %d x %d layers", entry.version, len(texts), config.steps,
            config.hidden_size, config.num_layers)
        target = folder / BACKBONE_DIR
        shutil.rmtree(target, ignore_errors=True)
        bar = ProgressLine(f"[{entry.version}] masked-LM pretraining", config.steps, "step")
        pretrain_roberta(texts, target, config,
                         progress=lambda step, loss: bar.update(step, f"loss {loss:.3f}"))
        spec = {"loader": "transformer", "source": "release", "path": None}
        path = str(target)
    else:
        known = sorted({*PACKAGED, *SERVER_TRAINED})
        raise ValueError(f"schedule entry {entry.name!r}: unknown backbone; use one of {known} "
                         "or name=/path/to/glove.txt|hf-model-dir")
    backbone = load_backbone(spec["loader"], path, max_length=settings.max_length)
    spec.update(sha256=backbone.sha256, hidden_size=backbone.hidden_size,
                max_length=settings.max_length, parameters=backbone.num_parameters())
    spec["bytes"] = tree_bytes(Path(path)) if path and Path(path).is_dir() else (
        Path(path).stat().st_size if path else 4 * backbone.num_parameters())
    return backbone, spec


def encode_public(backbone: Backbone, texts: list[str], version: str) -> np.ndarray:
    """Frozen features of every public document, with a progress bar."""
    chunks, bar = [], ProgressLine(f"[{version}] encoding public texts", len(texts), "text")
    for first in range(0, len(texts), ENCODE_CHUNK):
        chunks.append(backbone.encode(texts[first : first + ENCODE_CHUNK]))
        bar.update(min(first + ENCODE_CHUNK, len(texts)))
    return np.concatenate(chunks) if chunks else np.zeros((0, backbone.hidden_size), np.float32)


def build_or_load_release(entry: ScheduleEntry, settings: Settings, data_dir: Path,
                          releases: Path) -> ReleaseManifest:
    """Return the release for ``entry``, training it only if the cache doesn't have it.
    ``data_dir`` is the prepared folder; only its ``public/`` part is read."""
    rid = release_id(entry, settings, public_data_sha256(data_dir))
    cached = read_manifest(releases, rid)
    if cached is not None:
        log(INFO, "[%s] release cache hit %s: reusing the trained release, no training",
            entry.version, rid)
        return cached
    started = time.perf_counter()
    log(INFO, "[%s] release cache miss %s: training on public data", entry.version, rid)
    task = get_task(settings.task)
    public = task.load_public(data_dir)
    texts = public.texts
    folder = Path(releases) / rid
    folder.mkdir(parents=True, exist_ok=True)
    backbone, spec = _obtain_backbone(entry, settings, texts, folder)
    log(INFO, "[%s] backbone %s (%s, d=%d, sha256 %s…) kept frozen; training the %s head "
        "on cached features of %d public texts", entry.version, entry.name, backbone.arch,
        backbone.hidden_size, backbone.sha256[:12], task.name, len(texts))
    features = encode_public(backbone, texts, entry.version)
    head, metrics = task.train_head(
        features, public, settings.head_training(),
        progress=lambda line: log(INFO, "[%s]   head %s", entry.version, line),
    )
    primary = task.metric_spec.primary
    log(INFO, "[%s] global model on held-out public data: %s (%.1fs)", entry.version,
        ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                  if k in task.metric_spec.quality) or f"{primary} n/a",
        time.perf_counter() - started)
    manifest = ReleaseManifest(
        release_id=rid, version=entry.version, index=entry.index, name=entry.name,
        arch=backbone.arch, task=task.name, backbone=spec, head={},
        training={"public-valid": metrics, "seconds": time.perf_counter() - started,
                  "threads": torch.get_num_threads()},
    )
    return write_release(releases, manifest, head)
