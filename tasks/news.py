"""MIND news recommendation data: read and write the real format, split users.

``news.tsv`` (8 columns) and ``behaviors.tsv`` (5 columns), tab separated, no header, read with
``QUOTE_NONE`` (titles contain raw quotes). The synthetic generator writes the same files, so
one loader path serves both. Malformed rows raise an error naming file and line; unknown
history ids (known to occur in real MIND) are skipped with one counted warning per file.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

from tasks.base import DataError, SkipCounter
from tasks.files import atomic_write

log = logging.getLogger(__name__)

TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
NEWS_COLUMNS = 8
BEHAVIOR_COLUMNS = 5


@dataclass(frozen=True)
class NewsArticle:
    news_id: str
    category: str
    subcategory: str
    title: str
    abstract: str

    @property
    def text(self) -> str:
        """What the encoders read: the title, then the abstract when there is one."""
        return f"{self.title}. {self.abstract}" if self.abstract else self.title


@dataclass(frozen=True)
class Impression:
    impression_id: str
    user_id: str
    time: datetime
    history: tuple[str, ...]
    candidates: tuple[str, ...]
    labels: tuple[int, ...] | None  # None in the MIND-large test split (no "-label")


def _rows(path: Path, columns: int) -> Iterator[tuple[int, list[str]]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            count = 0
            for line_no, row in enumerate(reader, 1):
                if not row:
                    continue
                if len(row) != columns:
                    raise ValueError(f"{path}:{line_no}: expected {columns} tab-separated "
                                     f"columns, found {len(row)}")
                count += 1
                yield line_no, row
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from err
    if count == 0:
        raise ValueError(f"{path}: empty file (no rows)")


def read_news(path: str | Path) -> dict[str, NewsArticle]:
    news: dict[str, NewsArticle] = {}
    for line_no, row in _rows(Path(path), NEWS_COLUMNS):
        news_id = row[0].strip()
        if not news_id:
            raise ValueError(f"{path}:{line_no}: empty news id")
        if news_id in news:
            raise ValueError(f"{path}:{line_no}: duplicate news id {news_id}")
        news[news_id] = NewsArticle(news_id, row[1], row[2], row[3], row[4])
    return news


def _parse_candidates(field: str, where: str) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
    ids, labels = [], []
    for token in field.split():
        news_id, sep, label = token.rpartition("-")
        if not sep:
            ids.append(token)
            continue
        if label not in ("0", "1"):
            raise ValueError(f"{where}: impression {token!r} has label {label!r}, expected 0/1")
        ids.append(news_id)
        labels.append(int(label))
    if not ids:
        raise ValueError(f"{where}: no candidate news in the impression")
    if labels and len(labels) != len(ids):
        raise ValueError(f"{where}: some candidates are labelled and some are not")
    return tuple(ids), (tuple(labels) if labels else None)


def read_behaviors(path: str | Path, news: Mapping[str, NewsArticle] | None = None,
                   skipped: SkipCounter | None = None) -> list[Impression]:
    """Impressions of ``behaviors.tsv``; with ``news``, candidates must exist in it and
    unknown history ids (known to occur in real MIND) are dropped, counted in ``skipped``."""
    impressions, unknown = [], 0
    for line_no, row in _rows(Path(path), BEHAVIOR_COLUMNS):
        where = f"{path}:{line_no}"
        try:
            time = datetime.strptime(row[2].strip(), TIME_FORMAT)
        except ValueError as err:
            raise ValueError(f"{where}: time {row[2]!r} is not {TIME_FORMAT}") from err
        history = tuple(row[3].split())
        candidates, labels = _parse_candidates(row[4], where)
        if news is not None:
            missing = [c for c in candidates if c not in news]
            if missing:
                raise ValueError(f"{where}: candidate news {missing[:3]} not in news.tsv")
            kept = tuple(h for h in history if h in news)
            unknown += len(history) - len(kept)
            history = kept
        impressions.append(Impression(row[0], row[1], time, history, candidates, labels))
    if unknown:
        log.warning("skipped %d unknown history ids in %s (not in news.tsv)", unknown, path)
        if skipped is not None:
            skipped.add("unknown history ids (not in news.tsv)", unknown)
    return impressions


def _atomic_write(path: Path, lines: Iterable[str]) -> None:
    atomic_write(path, "".join(lines))


def _check_field(value: str, what: str) -> str:
    if "\t" in value or "\n" in value:
        raise ValueError(f"{what} contains a tab or newline, which MIND cannot store: {value!r}")
    return value


def write_news(path: str | Path, articles: Iterable[NewsArticle]) -> None:
    _atomic_write(Path(path), (
        "\t".join(_check_field(v, f"news {a.news_id}") for v in
                  (a.news_id, a.category, a.subcategory, a.title, a.abstract, "", "[]", "[]"))
        + "\n" for a in articles))


def write_behaviors(path: str | Path, impressions: Iterable[Impression]) -> None:
    def line(imp: Impression) -> str:
        if imp.labels is None:
            cands = " ".join(imp.candidates)
        else:
            cands = " ".join(f"{c}-{y}" for c, y in zip(imp.candidates, imp.labels, strict=True))
        return "\t".join((imp.impression_id, imp.user_id, imp.time.strftime(TIME_FORMAT),
                          " ".join(imp.history), cands)) + "\n"

    _atomic_write(Path(path), map(line, impressions))


def most_active_users(impressions: Sequence[Impression], n: int) -> list[str]:
    counts = Counter(imp.user_id for imp in impressions)
    return [user for user, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def split_chronological(impressions: Sequence[Impression], fraction: float = 0.7
                        ) -> tuple[list[Impression], list[Impression]]:
    """Earliest ``fraction`` for fine-tuning, the rest for testing (both non-empty if n >= 2)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    ordered = sorted(impressions, key=lambda imp: (imp.time, imp.impression_id))
    cut = min(max(1, round(len(ordered) * fraction)), max(len(ordered) - 1, 1))
    return ordered[:cut], ordered[cut:]


def _sha256_files(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def require_labels(impressions: Sequence[Impression], path: Path) -> None:
    """Evaluation needs clicks: refuse unlabelled impressions (the MIND-large test split)."""
    unlabelled = sum(imp.labels is None for imp in impressions)
    if unlabelled:
        raise DataError(
            f"{path}: {unlabelled} of {len(impressions)} impressions carry no click labels "
            "(candidates without '-0'/'-1', as in the MIND-large test split). Such files can "
            "be read for inference (swapfl data describe) but cannot be used to personalize "
            "or evaluate; use the train or dev split of MIND."
        )


def partition_mind(source_dir: str | Path, out_dir: str | Path, n_users: int) -> dict:
    """Split MIND files: the ``n_users`` most active users become private partitions."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    news = read_news(source_dir / "news.tsv")
    skipped = SkipCounter()
    impressions = read_behaviors(source_dir / "behaviors.tsv", news, skipped)
    require_labels(impressions, source_dir / "behaviors.tsv")
    users = most_active_users(impressions, n_users)
    if len(users) < n_users:
        raise DataError(f"{source_dir}/behaviors.tsv has {len(users)} users, "
                        f"{n_users} private users were asked for")
    by_user: dict[str, list[Impression]] = {}
    for imp in impressions:  # one pass: thousands of users over millions of impressions
        by_user.setdefault(imp.user_id, []).append(imp)
    for user in users:
        count = len(by_user[user])
        if count < 2:
            raise DataError(f"{source_dir}/behaviors.tsv: user {user} has {count} impression; "
                            "a private user needs at least 2 (fine-tune and test)")
    private = set(users)
    write_news(out_dir / "public" / "news.tsv", news.values())
    write_behaviors(out_dir / "public" / "behaviors.tsv",
                    [imp for imp in impressions if imp.user_id not in private])
    for user in users:
        write_behaviors(out_dir / "users" / user / "behaviors.tsv", by_user[user])
    manifest = {
        "task": "news",
        "users": users,
        "n_public_impressions": sum(imp.user_id not in private for imp in impressions),
        "skipped": skipped.counts,
        "source": str(source_dir),
        "source_sha256": _sha256_files(source_dir / "news.tsv", source_dir / "behaviors.tsv"),
    }
    _atomic_write(out_dir / "partition.json", [json.dumps(manifest, indent=2)])
    return manifest


def load_public(data_dir: str | Path) -> tuple[dict[str, NewsArticle], list[Impression]]:
    """The server's view: public articles and public users' impressions only."""
    public = Path(data_dir) / "public"
    news = read_news(public / "news.tsv")
    return news, read_behaviors(public / "behaviors.tsv", news)


def private_users(data_dir: str | Path) -> list[str]:
    path = Path(data_dir) / "partition.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the data folder was not partitioned")
    return list(json.loads(path.read_text())["users"])


def load_user(data_dir: str | Path, user_id: str
              ) -> tuple[Mapping[str, NewsArticle], list[Impression]]:
    """A device's view: the public article catalogue and its own impressions."""
    path = Path(data_dir) / "users" / user_id / "behaviors.tsv"
    if not path.is_file():
        known = private_users(data_dir)
        raise KeyError(f"no private partition for user {user_id!r} in {data_dir} "
                       f"(known: {known[:5]}{'…' if len(known) > 5 else ''})")
    news = public_catalogue(Path(data_dir) / "public" / "news.tsv")
    return news, read_behaviors(path, news)


@functools.lru_cache(maxsize=2)
def _catalogue(path: str, size: int, mtime_ns: int) -> Mapping[str, NewsArticle]:
    return MappingProxyType(read_news(path))


def public_catalogue(path: Path) -> Mapping[str, NewsArticle]:
    """The public articles of ``news.tsv``, parsed once per process while the file is
    unchanged (read-only): every virtual device a process serves reads the same catalogue,
    and parsing real MIND's 65k articles per message would dwarf a device's work."""
    stat = Path(path).stat()
    return _catalogue(str(path), stat.st_size, stat.st_mtime_ns)
