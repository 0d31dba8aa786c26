"""Text classification on the task contract: one implementation shared by every
classification task (aggression, writers, LaMP-1/2/3).

A dataset module only reads its real format into ``TextExample`` records
(``read_source``) and writes a synthetic world in that format (``generate``); partitioning,
loading, the head, its training, the loss and the default metrics live here once.

Head (ALGORITHMS.md, "Classification tasks"): ``h = tanh(W f + a)`` projects the backbone's
pooled vector ``f`` to ``dim`` (the same personal dimension for every backbone version), and
``z_c = θ · (w_c ⊙ h) + b_c``. Two classes use one logit (C = 1, BCE); more use C logits
(softmax cross-entropy). Prepared partitions are JSON lines under ``public/`` and
``users/<id>/``: ``texts.jsonl`` (one line per distinct text: ``doc_id``, ``text``) and
``examples.jsonl`` (one line per labelled example, pointing to its text by ``doc_id``), so a
comment labelled by ten annotators is stored once.
"""

from __future__ import annotations

import gzip
import json
import zlib
from abc import abstractmethod
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tasks.base import (
    PARTITION_MANIFEST,
    DataError,
    Design,
    HeadTrainingConfig,
    MetricSpec,
    PublicData,
    Task,
    TaskHead,
    UserData,
    read_public_manifest,
    write_public_manifest,
)
from tasks.files import atomic_write
from tasks.metrics import classification_metrics

EXAMPLES_FILE = "examples.jsonl"
TEXTS_FILE = "texts.jsonl"
SPLITS = ("finetune", "test")
MIN_USER_EXAMPLES = 4  # at least 2 to fine-tune on, 1 to validate/select, 1 to test
VALID_FRACTION = 0.1  # public examples held out (chronologically last) to report the head


@dataclass(frozen=True, slots=True)
class TextExample:
    """One labelled text of one user, as every classification reader returns it.

    ``user_id``: writer / annotator / LaMP user. ``doc_id``: the text's id (examples sharing a
    text, e.g. one comment labelled by many annotators, share it and are encoded once).
    ``label``: the class name. ``order``: chronological key (a time or the position in the
    file), comparable across users of one source (public validation takes the latest).
    ``split``: "finetune" / "test" when the source fixes it, else None (chronological
    fraction). ``group``: examples that are alternatives of one question (LaMP-1), else ""."""

    user_id: str
    example_id: str
    text: str
    label: str
    order: float
    doc_id: str = ""
    split: str | None = None
    group: str = ""

    def __post_init__(self) -> None:
        if not self.doc_id:
            object.__setattr__(self, "doc_id", self.example_id)
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"example {self.example_id}: split {self.split!r} not in {SPLITS}")


@dataclass
class ClassificationSource:
    """Everything a reader found: examples, class names (index order; with two classes the
    second is the positive one), counted skips and task-specific counts for ``describe``."""

    examples: list[TextExample]
    classes: list[str]
    skipped: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClassBatch:
    """Examples over a user's text index: ``docs[i]`` is the text of example i."""

    docs: np.ndarray  # (n,) int64
    labels: np.ndarray  # (n,) float32: 0/1 (one output) or class index
    groups: np.ndarray  # (n,) int64, -1 = not part of a question with alternatives

    def __len__(self) -> int:
        return len(self.docs)

    def subset(self, indices: np.ndarray) -> ClassBatch:
        indices = np.asarray(indices, dtype=np.int64)
        return ClassBatch(self.docs[indices], self.labels[indices], self.groups[indices])

    def documents(self) -> np.ndarray:
        return np.unique(self.docs)

    def scored_documents(self) -> np.ndarray:
        return self.docs

    def units(self) -> np.ndarray:
        """Consecutive examples of one group (alternatives of a question) form one unit."""
        starts = np.ones(len(self.groups), dtype=bool)
        starts[1:] = (self.groups[1:] < 0) | (self.groups[1:] != self.groups[:-1])
        return np.cumsum(starts) - 1


class ClassificationHead(TaskHead):
    """``z_c = θ · (w_c ⊙ tanh(W f + a)) + b_c``; θ = 1 is the global head."""

    def __init__(self, in_dim: int, dim: int = 64, n_outputs: int = 1) -> None:
        super().__init__()
        self.in_dim, self.dim, self.n_outputs = in_dim, dim, n_outputs
        self.project = nn.Linear(in_dim, dim)
        self.classifier = nn.Linear(dim, n_outputs)  # rows w_c, bias b_c

    def design(self, features: torch.Tensor, batch: ClassBatch) -> Design:
        h = torch.tanh(self.project(features[torch.as_tensor(batch.docs)]))  # (n, d)
        n = h.shape[0]
        left = self.classifier.weight.unsqueeze(0).expand(n, -1, -1)  # (n, C, d)
        right = h.unsqueeze(1).expand(-1, self.n_outputs, -1)
        offset = self.classifier.bias.unsqueeze(0).expand(n, -1)
        return Design(left, right, offset, similarity=h)

    def global_logits(self, features: torch.Tensor, batch: ClassBatch) -> torch.Tensor:
        return self.classifier(torch.tanh(self.project(features[torch.as_tensor(batch.docs)])))

    def config(self) -> dict[str, int]:
        return {"in_dim": self.in_dim, "dim": self.dim, "n_outputs": self.n_outputs}


def n_outputs_for(classes: Sequence[str]) -> int:
    return 1 if len(classes) == 2 else len(classes)


# --- files ------------------------------------------------------------------------------------


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Atomically write one JSON object per line."""
    atomic_write(path, "".join(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
                               for record in records))


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-empty line of a plain or gzip (``.gz``) JSON-lines file.

    Errors name the file and line (bad JSON, not an object, bad bytes: each line is decoded on
    its own); gzip dumps stream without being unpacked first; an empty file is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    seen = False
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            for line_no, raw in enumerate(handle, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(f"{path}:{line_no}: not UTF-8 text ({err.reason} at byte "
                                    f"{err.start}); re-encode the file as UTF-8") from err
                if line_no == 1:
                    line = line.removeprefix("\ufeff")
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{line_no}: not a JSON object ({err.msg})") from err
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{line_no}: expected a JSON object, got "
                                    f"{type(record).__name__}")
                seen = True
                yield line_no, record
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a complete gzip file ({err})") from err
    if not seen:
        raise DataError(f"{path}: empty file (no examples)")


def write_examples(folder: Path, examples: Sequence[TextExample]) -> None:
    """A prepared part: each distinct text once, then the examples pointing to them."""
    texts: dict[str, str] = {}
    for example in examples:
        texts.setdefault(example.doc_id, example.text)
    write_jsonl(folder / TEXTS_FILE, ({"doc_id": d, "text": t} for d, t in texts.items()))
    write_jsonl(folder / EXAMPLES_FILE, ({k: v for k, v in asdict(e).items() if k != "text"}
                                         for e in examples))


def read_examples(folder: Path) -> list[TextExample]:
    """The examples of a prepared part, texts joined back in by ``doc_id``."""
    texts: dict[str, str] = {}
    for line_no, record in read_jsonl(folder / TEXTS_FILE):
        if not isinstance(record.get("doc_id"), str) or not isinstance(record.get("text"), str):
            raise DataError(f"{folder / TEXTS_FILE}:{line_no}: expected doc_id and text")
        texts[record["doc_id"]] = record["text"]
    out = []
    for line_no, record in read_jsonl(folder / EXAMPLES_FILE):
        try:
            out.append(TextExample(text=texts[record["doc_id"]], **record))
        except KeyError as err:
            raise DataError(f"{folder / EXAMPLES_FILE}:{line_no}: text {err} is not in "
                            f"{TEXTS_FILE}") from err
        except (TypeError, ValueError) as err:
            raise DataError(f"{folder / EXAMPLES_FILE}:{line_no}: not a prepared example "
                            f"({err})") from err
    return out


def _cut_between_items(ordered: Sequence[TextExample], cut: int) -> int:
    """Move a cut forward so that alternatives of one question (same group) and labels of one
    text at one time (same doc and order) stay on one side."""
    def same(a: TextExample, b: TextExample) -> bool:
        return bool(a.group and a.group == b.group) or (a.doc_id == b.doc_id
                                                         and a.order == b.order)

    while 0 < cut < len(ordered) and same(ordered[cut], ordered[cut - 1]):
        cut += 1
    return cut


def chronological_split(examples: Sequence[TextExample], fraction: float
                        ) -> tuple[list[TextExample], list[TextExample]]:
    """The source's own split when every example has one, else the earliest ``fraction`` to
    fine-tune and the rest to test; alternatives of one question stay on one side."""
    if not 0 < fraction < 1:
        raise ValueError(f"finetune fraction must be in (0, 1), got {fraction}")
    if examples and all(e.split is not None for e in examples):
        ordered = sorted(examples, key=lambda e: (e.order, e.example_id))
        return ([e for e in ordered if e.split == "finetune"],
                [e for e in ordered if e.split == "test"])
    ordered = sorted(examples, key=lambda e: (e.order, e.group, e.doc_id, e.example_id))
    cut = min(max(1, round(len(ordered) * fraction)), max(len(ordered) - 1, 1))
    cut = _cut_between_items(ordered, cut)
    return ordered[:cut], ordered[cut:]


def most_active(examples: Sequence[TextExample], n: int) -> list[str]:
    """The ``n`` users with the most examples (ties: user id)."""
    counts = Counter(e.user_id for e in examples)
    return [u for u, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


# --- the shared task ---------------------------------------------------------------------------


class ClassificationTask(Task):
    """Shared implementation; subclasses implement ``read_source`` and ``generate``."""

    metric_spec = MetricSpec(("accuracy", "f1", "macro-f1", "examples"), primary="accuracy",
                             counts=("examples",))

    @abstractmethod
    def read_source(self, source: Path) -> ClassificationSource:
        """Read and validate the real-format files under ``source``."""

    # -- data owner -------------------------------------------------------------------------

    def select_users(self, source: ClassificationSource, n: int) -> list[str]:
        """Private users: the most active (override for a task-specific rule)."""
        return most_active(source.examples, n)

    def prepare(self, source: Path, out_dir: Path, users: int) -> dict[str, Any]:
        self.check_source(source)
        found = self.read_source(Path(source))
        if len(found.classes) < 2:
            raise DataError(f"{source}: one class {found.classes} in the data; a classifier "
                            "needs at least two")
        chosen = self.select_users(found, users)
        if len(chosen) < users:
            raise DataError(f"{source}: {len(chosen)} users with examples, {users} private "
                            "users were asked for")
        by_user: dict[str, list[TextExample]] = defaultdict(list)
        for example in found.examples:
            by_user[example.user_id].append(example)
        for user in chosen:
            if len(by_user[user]) < MIN_USER_EXAMPLES:
                raise DataError(f"{source}: user {user} has {len(by_user[user])} examples; a "
                                f"private user needs at least {MIN_USER_EXAMPLES} to split "
                                "into fine-tune and test")
            with_split = sum(e.split is not None for e in by_user[user])
            if 0 < with_split < len(by_user[user]):
                raise DataError(f"{source}: user {user} has a split on {with_split} of "
                                f"{len(by_user[user])} examples; give it on all or none")
            for split in SPLITS:
                if with_split and not any(e.split == split for e in by_user[user]):
                    raise DataError(f"{source}: user {user} has no {split!r} example")
        private = set(chosen)
        public = [e for e in found.examples if e.user_id not in private]
        if not public:
            raise DataError(f"{source}: no public examples left to train the global head "
                            f"after taking {users} private users")
        out_dir = Path(out_dir)
        write_examples(out_dir / "public", public)
        for user in chosen:
            write_examples(out_dir / "users" / _safe(user), by_user[user])
        manifest = {"task": self.name, "users": chosen, "classes": found.classes,
                    "public-examples": len(public), "skipped": found.skipped,
                    "source": str(source)}
        write_public_manifest(out_dir, {"task": self.name, "classes": found.classes,
                                        "examples": len(public)})
        atomic_write(out_dir / PARTITION_MANIFEST, json.dumps(manifest, indent=2,
                                                               ensure_ascii=False))
        return manifest

    def describe(self, source: Path) -> dict[str, Any]:
        self.check_source(source)
        found = self.read_source(Path(source))
        per_user = Counter(e.user_id for e in found.examples)
        per_class = Counter(e.label for e in found.examples)
        top = self.select_users(found, 10)
        label_counts: dict[str, Counter] = defaultdict(Counter)
        for e in found.examples:
            if e.user_id in top:
                label_counts[e.user_id][e.label] += 1
        counts = sorted(per_user.values())
        info = {
            "task": self.name, "source": str(source), "examples": len(found.examples),
            "distinct-texts": len({e.doc_id for e in found.examples}),
            "users": len(per_user),
            "classes": found.classes,
            "per-class": {c: per_class.get(c, 0) for c in found.classes},
            "examples-per-user": {"min": counts[0] if counts else 0,
                                  "median": counts[len(counts) // 2] if counts else 0,
                                  "max": counts[-1] if counts else 0},
            "most-active-users": {u: {"examples": per_user[u], "labels": dict(label_counts[u])}
                                  for u in top},
            "skipped": found.skipped,
        }
        clashes = set(info) & set(found.details)
        if clashes:  # a reader's details must not hide the shared counts
            raise ValueError(f"{self.name}: describe details reuse the names {sorted(clashes)}")
        return {**info, **found.details}

    # -- server -----------------------------------------------------------------------------

    def _classes(self, data_dir: Path) -> list[str]:
        return list(read_public_manifest(data_dir)["classes"])

    def _batch(self, examples: Sequence[TextExample], doc_index: dict[str, int],
               classes: Sequence[str], where: str) -> ClassBatch:
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({e.label for e in examples} - set(index))
        if unknown:
            raise DataError(f"{where}: labels {unknown[:5]} are not among the classes "
                            f"{list(classes)[:10]}")
        group_ids: dict[str, int] = {}
        groups = [group_ids.setdefault(e.group, len(group_ids)) if e.group else -1
                  for e in examples]
        return ClassBatch(
            docs=np.asarray([doc_index[e.doc_id] for e in examples], dtype=np.int64),
            labels=np.asarray([index[e.label] for e in examples], dtype=np.float32),
            groups=np.asarray(groups, dtype=np.int64),
        )

    def load_public(self, data_dir: Path) -> PublicData:
        classes = self._classes(data_dir)
        path = Path(data_dir) / "public"
        examples = sorted(read_examples(path),
                          key=lambda e: (e.order, e.group, e.doc_id, e.example_id))
        texts = {e.doc_id: e.text for e in examples}
        doc_ids = sorted(texts)
        doc_index = {d: i for i, d in enumerate(doc_ids)}
        cut = _cut_between_items(examples,
                                 len(examples) - max(1, round(len(examples) * VALID_FRACTION)))
        train = self._batch(examples[:cut] or examples, doc_index, classes, str(path))
        valid = self._batch(examples[cut:], doc_index, classes, str(path))
        return PublicData(doc_ids, [texts[d] for d in doc_ids], train, valid,
                          n_outputs=n_outputs_for(classes))

    def head_class(self) -> type[TaskHead]:
        return ClassificationHead

    def train_head(self, features: np.ndarray, public: PublicData, config: HeadTrainingConfig,
                   progress: Callable[[str], None] | None = None
                   ) -> tuple[TaskHead, dict[str, float]]:
        """Adam on the task loss over frozen features (minibatches of examples)."""
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        head = ClassificationHead(features.shape[1], config.dim, public.n_outputs)
        optimizer = torch.optim.Adam(head.parameters(), lr=config.lr)
        feats = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        train = public.train
        for epoch in range(config.epochs):
            order = rng.permutation(len(train))
            total = 0.0
            for start in range(0, len(order), config.batch_size):
                batch = train.subset(np.sort(order[start:start + config.batch_size]))
                loss = self.loss(head.global_logits(feats, batch),
                                 torch.as_tensor(batch.labels))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            if progress:
                progress(f"epoch {epoch + 1}/{config.epochs} loss "
                         f"{total / max(len(train), 1):.4f}")
        head.eval()
        metrics: dict[str, float] = {}
        if len(public.valid):
            with torch.no_grad():
                logits = head.global_logits(feats, public.valid).numpy()
            metrics = self.evaluate(public.valid, logits)
        return head, metrics

    # -- device -----------------------------------------------------------------------------

    def user_folder(self, data_dir: Path, user_id: str) -> Path:
        return Path(data_dir) / "users" / _safe(user_id)

    def load_user(self, data_dir: Path, user_id: str, finetune_fraction: float) -> UserData:
        classes = self._classes(data_dir)
        path = self.user_folder(data_dir, user_id)
        if not (path / EXAMPLES_FILE).is_file():
            known = self.private_users(data_dir)
            raise KeyError(f"no private partition for user {user_id!r} in {data_dir} "
                           f"(known: {known[:5]}{'…' if len(known) > 5 else ''})")
        examples = read_examples(path)
        finetune, test = chronological_split(examples, finetune_fraction)
        if not finetune or not test:
            raise DataError(f"{path}: user {user_id} has {len(finetune)} fine-tune and "
                            f"{len(test)} test examples; both must be non-empty")
        texts = {e.doc_id: e.text for e in examples}
        doc_ids = sorted(texts)
        doc_index = {d: i for i, d in enumerate(doc_ids)}
        return UserData(
            user_id=user_id, doc_ids=doc_ids, texts=[texts[d] for d in doc_ids],
            finetune=self._batch(finetune, doc_index, classes, str(path)),
            test=self._batch(test, doc_index, classes, str(path)),
            label_names=tuple(classes),
        )

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] == 1:
            return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
        return nn.functional.cross_entropy(logits, labels.long())

    def predicted_classes(self, batch: ClassBatch, logits: np.ndarray) -> np.ndarray:
        """Class index per example: the sign of the one logit, or the argmax of C."""
        logits = np.asarray(logits)
        if logits.shape[1] == 1:
            return (logits[:, 0] > 0).astype(np.int64)
        return np.argmax(logits, axis=1)

    def evaluate(self, batch: ClassBatch, logits: np.ndarray) -> dict[str, float]:
        truth = batch.labels.astype(np.int64)
        n_classes = max(2, np.asarray(logits).shape[1])
        metrics = classification_metrics(truth, self.predicted_classes(batch, logits),
                                         n_classes)
        return {name: metrics[name] for name in self.metric_spec.names if name in metrics}


def _safe(user_id: str) -> str:
    """A folder name for a user id (ids are letters, digits and - _ . in every real dataset;
    anything else is percent-escaped so no id can leave ``users/``)."""
    out = "".join(ch if ch.isalnum() or ch in "-_." else f"%{ord(ch):02x}" for ch in user_id)
    return out if out not in ("", ".", "..") else f"%{out}"
