"""Backbone loaders by name, and the named backbones a schedule can ask for.

A schedule entry is a name (``glove``, ``bert``, ``roberta``) or ``name=path`` for a user's own
GloVe .txt file or local Hugging Face model directory. Nothing here downloads anything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from backbones.base import Backbone
from backbones.glove import GloveBackbone


def _transformer(path: str | None, max_length: int = 64) -> Backbone:
    from backbones.transformer import TransformerBackbone, minilm_dir

    return TransformerBackbone(path if path is not None else minilm_dir(), max_length=max_length)


def _glove(path: str | None, max_length: int = 64) -> Backbone:
    return GloveBackbone(path)


LOADERS: dict[str, Callable[..., Backbone]] = {"glove": _glove, "transformer": _transformer}
"""How to open a backbone of each loader kind from a path (None = the packaged weights)."""

PACKAGED: dict[str, str] = {"glove": "glove", "bert": "transformer"}


def packaged_path(loader: str) -> Path:
    """Where the offline package of a loader keeps its weights (what a release built from a
    package ships to a device that has no such package)."""
    from backbones.glove import packaged_glove_dir
    from backbones.transformer import minilm_dir

    folders: dict[str, Callable[[], Path]] = {"glove": packaged_glove_dir,
                                              "transformer": minilm_dir}
    return Path(folders[loader]())
"""Schedule names served by offline weight packages (GloVe 6B-50d, all-MiniLM-L6-v2)."""

SERVER_TRAINED = frozenset({"roberta"})
"""Schedule names the server trains itself on public text (no offline weights exist)."""


def load_backbone(loader: str, path: str | None = None, max_length: int = 64) -> Backbone:
    try:
        make = LOADERS[loader]
    except KeyError:
        raise ValueError(f"unknown backbone loader {loader!r}; known: {sorted(LOADERS)}") from None
    return make(path, max_length=max_length)


def loader_for_path(path: str | Path) -> str:
    """``glove`` for a text file of vectors, ``transformer`` for a HF model directory."""
    path = Path(path)
    if path.is_file():
        return "glove"
    if (path / "config.json").is_file():
        return "transformer"
    raise FileNotFoundError(
        f"backbone path {path} is neither a GloVe .txt file nor a Hugging Face model directory "
        "(with config.json)"
    )
