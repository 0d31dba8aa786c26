"""The task contract: what a task (news, aggression, writers, LaMP…) gives the platform.

A task owns its data (preparing partitions from its source, loading the public part and one
user's partition, a synthetic generator writing the real format), its head and the head's
global training, its device loss and its metrics. Strategies and the device see a task only
through this module, so no strategy knows which task it runs on.

The personal-matrix design every strategy works on (ALGORITHMS.md): for an example i and an
output c, the head gives two factor rows and an offset, and the logit is

    z_ic = θ · (left_ic ⊙ right_ic) + offset_ic          (E_ic = left_ic ⊙ right_ic)

news: left = u (user vector), right = v (news vector), offset = 0, one output per (impression,
candidate) pair; classification: left = w_c (class weights), right = h (projected text),
offset = b_c. θ = 1 is exactly the released global model.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from backbones.cache import PrivateTextError, PublicDocuments

PARTITION_MANIFEST = "partition.json"  # the data owner's user list: devices read it, the server
PUBLIC_MANIFEST = "public/manifest.json"  # never does; the server reads public/ only


class DataError(ValueError):
    """Bad input data; the message names the file, the line and what is wrong."""


@dataclass(frozen=True)
class MetricSpec:
    """The quality metrics a task's rows carry.

    ``names`` are every metric the task reports (the uplink whitelist and report columns are
    built from them), ``primary`` the one reports rank by, ``higher_is_better`` its direction
    (and that of every metric except those in ``lower_is_better``), ``counts`` the ones that
    count evaluated units rather than measure quality."""

    names: tuple[str, ...]
    primary: str
    higher_is_better: bool = True
    lower_is_better: tuple[str, ...] = ()
    counts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.primary not in self.names:
            raise ValueError(f"primary metric {self.primary!r} not in {self.names}")

    @property
    def quality(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n not in self.counts)


class Examples(Protocol):
    """A batch of one user's labelled examples (news: candidate pairs; classification: texts),
    in chronological order.

    ``labels`` are float 0/1 for single-output tasks, class indices for multi-class ones."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def subset(self, indices: np.ndarray) -> Examples: ...

    def documents(self) -> np.ndarray:
        """Sorted indices into ``UserData.texts`` of every text the batch reads."""
        ...

    def scored_documents(self) -> np.ndarray:
        """(n,) index of the text each example scores (news: the candidate; classification:
        the text itself) — what retrieval-based strategies pair with the example's label."""
        ...

    def units(self) -> np.ndarray:
        """(n,) non-decreasing ids of the units a split must not cut (news: impressions;
        LaMP-1: the alternatives of one question; otherwise one example each)."""
        ...


def chronological_tail(batch: Examples, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the earliest units and of the last ``fraction`` of units (the held-out
    validation tail of model selection; ALGORITHMS.md). The tail is empty when ``fraction`` is
    0 or fewer than two units exist; it never takes every unit."""
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    units = np.asarray(batch.units())
    distinct = np.unique(units)
    n_tail = min(int(round(len(distinct) * fraction)), len(distinct) - 1) if fraction else 0
    if n_tail <= 0:
        return np.arange(len(units)), np.zeros(0, dtype=np.int64)
    first_tail_unit = distinct[len(distinct) - n_tail]
    return np.flatnonzero(units < first_tail_unit), np.flatnonzero(units >= first_tail_unit)


@dataclass
class UserData:
    """What a device holds: its texts and its fine-tune / test examples over them.

    ``texts_are_public`` marks texts that are public documents (the news catalogue): only
    those may go into the node-wide feature store shared by virtual devices. Private texts
    are cached in ``private_cache``, which lives and dies with this object (one message).
    ``label_names[k]`` names label value k (what retrieval prompts and profiles write)."""

    user_id: str
    doc_ids: list[str]
    texts: list[str]
    finetune: Examples
    test: Examples
    texts_are_public: bool = False
    label_names: tuple[str, ...] = ("negative", "positive")
    private_cache: Any = field(default=None, repr=False, compare=False)

    def public_documents(self, rows: Sequence[int]) -> PublicDocuments:
        """The documents at ``rows`` for the node's shared feature store; refused unless the
        texts are public documents (a user's private texts are never shared)."""
        if not self.texts_are_public:
            raise PrivateTextError("these texts are a user's private texts: they cannot "
                                   "enter a cache shared across devices")
        return PublicDocuments([self.doc_ids[i] for i in rows], [self.texts[i] for i in rows])


@dataclass
class Design:
    """The personal-matrix design of a batch: ``z = (left ⊙ right) θ + offset``.

    ``left``, ``right``: (n, C, d); ``offset``: (n, C); ``similarity``: (n, k) one vector per
    example for clustering examples (FaLA's weak signal). Tensors or numpy arrays."""

    left: Any
    right: Any
    offset: Any
    similarity: Any

    @property
    def rows(self) -> Any:
        """E = left ⊙ right, (n, C, d)."""
        return self.left * self.right

    def logits(self, theta: Any) -> Any:
        """(n, C) logits for a personal diagonal θ (d,)."""
        return self.rows @ theta + self.offset

    def numpy(self) -> Design:
        def plain(value: Any) -> np.ndarray:
            return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value

        return Design(plain(self.left), plain(self.right), plain(self.offset),
                      plain(self.similarity))


class TaskHead(nn.Module, ABC):
    """The global head on a backbone's pooled vectors; θ is applied through ``Design``.

    ``dim`` is the personal dimension (θ's size), the same for every backbone version, and
    ``n_outputs`` the logits per example (C)."""

    dim: int
    n_outputs: int

    @abstractmethod
    def design(self, features: torch.Tensor, batch: Examples) -> Design:
        """The batch's design from ``features`` (n_texts, hidden) of the user's texts, indexed
        like ``UserData.texts`` (rows a batch does not read may be anything). Differentiable."""

    @abstractmethod
    def global_logits(self, features: torch.Tensor, batch: Examples) -> torch.Tensor:
        """(n, C) logits of the global model computed directly (not through the design);
        ``design(...).logits(1)`` must equal it: θ = 1 is the released model."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON keyword arguments that rebuild an untrained head of this shape."""


@dataclass
class HeadTrainingConfig:
    """Global training of a task head on public data (the server's step)."""

    dim: int = 64
    epochs: int = 4
    batch_size: int = 64
    lr: float = 3e-3
    negatives: int = 4  # news: sampled non-clicks per click
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dim", "epochs", "batch_size", "negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass
class SyntheticSpec:
    """The knobs every synthetic generator understands (each task maps them to its world).

    ``users`` private users; ``public_users`` population users (public data); ``items`` per
    private user (impressions, annotations, texts, profile items); ``documents`` the size of
    the shared pool (news articles, comments) where a task has one."""

    seed: int = 0
    users: int = 8
    public_users: int = 400
    items: int = 40
    documents: int = 1200

    def __post_init__(self) -> None:
        for name in ("users", "public_users", "items", "documents"):
            if getattr(self, name) < 1:
                raise ValueError(f"synthetic {name} must be >= 1, got {getattr(self, name)}")


@dataclass
class PublicData:
    """The server's view: public texts and the head's training / validation examples."""

    doc_ids: list[str]
    texts: list[str]
    train: Examples
    valid: Examples
    n_outputs: int = 1  # logits per example (C)


class Task(ABC):
    """A task: data, head, loss and metrics. Subclasses register with ``@register_task``."""

    name: ClassVar[str] = ""
    metric_spec: ClassVar[MetricSpec]
    source_help: ClassVar[str] = ""  # what a real data-source folder must contain

    # -- data owner (the launcher, before any Flower process starts) ------------------------

    @abstractmethod
    def generate(self, out_dir: Path, spec: SyntheticSpec) -> Path:
        """Write a synthetic world in the task's real file format into ``out_dir``."""

    @abstractmethod
    def prepare(self, source: Path, out_dir: Path, users: int) -> dict[str, Any]:
        """Partition real-format files: ``out_dir/public/…`` (server), one
        ``out_dir/users/<id>/…`` per selected private user, and ``partition.json`` (returned).
        Validates everything first: bad files fail here, not in a device."""

    @abstractmethod
    def describe(self, source: Path) -> dict[str, Any]:
        """The counts a researcher checks first (items, users, labels, skipped rows…)."""

    def check_source(self, source: Path) -> None:
        """Fail fast (before anything slow) if ``source`` is not a folder of this task."""
        if not Path(source).is_dir():
            raise FileNotFoundError(f"data-source {source} is not a folder; {self.source_help}")

    # -- server (public data only) ----------------------------------------------------------

    @abstractmethod
    def load_public(self, data_dir: Path) -> PublicData:
        """Public texts and the head's training data; never opens ``users/``."""

    @abstractmethod
    def train_head(self, features: np.ndarray, public: PublicData, config: HeadTrainingConfig,
                   progress: Callable[[str], None] | None = None
                   ) -> tuple[TaskHead, dict[str, float]]:
        """Train the global head on frozen features of ``public.texts``; returns it and its
        metrics on ``public.valid``."""

    @abstractmethod
    def head_class(self) -> type[TaskHead]:
        """The head's class (``head_class()(**config)`` rebuilds a released head)."""

    # -- device -----------------------------------------------------------------------------

    @abstractmethod
    def load_user(self, data_dir: Path, user_id: str, finetune_fraction: float) -> UserData:
        """One user's partition, split into fine-tune and test examples."""

    @abstractmethod
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean loss of (n, C) logits against a batch's labels (fine-tuning on a device)."""

    @abstractmethod
    def evaluate(self, batch: Examples, logits: np.ndarray) -> dict[str, float]:
        """The task's metrics (``metric_spec.names``) of (n, C) logits on a batch."""

    def label_targets(self, labels: np.ndarray, n_outputs: int) -> np.ndarray:
        """(n, C) 0/1 targets per output: the labels themselves for one output, one-hot
        for C classes (the one-vs-rest rows of the personal fit, ALGORITHMS.md)."""
        labels = np.asarray(labels)
        if n_outputs == 1:
            return labels.astype(np.float64).reshape(-1, 1)
        return np.eye(n_outputs)[labels.astype(np.int64)]

    # -- partitions ---------------------------------------------------------------------------

    def private_users(self, data_dir: Path) -> list[str]:
        """The private users of a prepared folder (order = partition-id in simulation)."""
        return list(read_partition(data_dir)["users"])

    def user_folder(self, data_dir: Path, user_id: str) -> Path:
        """The folder of one user's private files in a prepared folder (what a deployed
        device receives, and nothing of any other user)."""
        return Path(data_dir) / "users" / user_id


def _read_prepared(data_dir: Path, name: str) -> dict[str, Any]:
    path = Path(data_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the data folder was not prepared "
                                "(swapfl prepare / swapfl run do it)")
    return json.loads(path.read_text(encoding="utf-8"))


def read_partition(data_dir: Path) -> dict[str, Any]:
    """The data owner's manifest (private user ids): devices read it, the server never."""
    return _read_prepared(data_dir, PARTITION_MANIFEST)


def write_public_manifest(data_dir: Path, info: Mapping[str, Any]) -> None:
    """What the server may know about prepared data (task, classes, counts; no user ids)."""
    from tasks.files import atomic_write

    atomic_write(Path(data_dir) / PUBLIC_MANIFEST, json.dumps(dict(info), indent=2,
                                                              ensure_ascii=False))


def read_public_manifest(data_dir: Path) -> dict[str, Any]:
    """What the server may read about prepared data (see ``write_public_manifest``)."""
    return _read_prepared(data_dir, PUBLIC_MANIFEST)


@dataclass
class SkipCounter:
    """Known messiness of real data: counted, reported, never silent."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, n: int = 1) -> None:
        if n:
            self.counts[reason] = self.counts.get(reason, 0) + n
