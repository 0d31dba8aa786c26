"""Run settings read from Flower's run config (hyphenated keys in pyproject.toml)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ScheduleEntry:
    """One backbone version: ``bert`` or ``mybert=/path/to/hf-dir`` in the schedule."""

    index: int
    name: str
    path: str | None = None

    @property
    def version(self) -> str:
        return f"{self.name}@{self.index}"


def parse_schedule(text: str) -> list[ScheduleEntry]:
    entries = []
    for i, item in enumerate(text.replace(",", " ").split(), start=1):
        name, sep, path = item.partition("=")
        if not name or (sep and not path):
            raise ValueError(f"schedule entry {item!r} must be 'name' or 'name=path'")
        entries.append(ScheduleEntry(i, name, str(Path(path).expanduser().resolve()) if sep
                                     else None))
    if not entries:
        raise ValueError("schedule is empty; e.g. schedule = \"glove bert roberta\"")
    return entries


@dataclass(frozen=True)
class Settings:
    task: str
    data_source: str
    work_dir: Path
    out_dir: Path
    schedule: tuple[ScheduleEntry, ...]
    strategies: str
    strategy_options: str
    users: int
    seed: int
    synthetic_articles: int
    synthetic_public_users: int
    synthetic_impressions: int
    head_dim: int
    global_epochs: int
    global_batch_size: int
    global_lr: float
    negatives: int
    roberta_steps: int
    roberta_hidden: int
    roberta_layers: int
    max_length: int
    threads: int
    server_threads: int
    node_wait_seconds: float
    reply_timeout_seconds: float

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> Settings:
        def get(key: str, kind: type) -> Any:
            if key not in config:
                raise KeyError(f"run config lacks {key!r} (see [tool.flwr.app.config])")
            try:
                return kind(config[key])
            except (TypeError, ValueError) as err:
                raise ValueError(f"run config {key!r}: expected {kind.__name__}, "
                                 f"got {config[key]!r}") from err

        settings = cls(
            task=get("task", str),
            data_source=get("data-source", str),
            work_dir=Path(get("work-dir", str)).expanduser().resolve(),
            out_dir=Path(get("out-dir", str)).expanduser().resolve(),
            schedule=tuple(parse_schedule(get("schedule", str))),
            strategies=get("strategies", str),
            strategy_options=get("strategy-options", str),
            users=get("users", int),
            seed=get("seed", int),
            synthetic_articles=get("synthetic-articles", int),
            synthetic_public_users=get("synthetic-public-users", int),
            synthetic_impressions=get("synthetic-impressions", int),
            head_dim=get("head-dim", int),
            global_epochs=get("global-epochs", int),
            global_batch_size=get("global-batch-size", int),
            global_lr=get("global-lr", float),
            negatives=get("negatives", int),
            roberta_steps=get("roberta-steps", int),
            roberta_hidden=get("roberta-hidden", int),
            roberta_layers=get("roberta-layers", int),
            max_length=get("max-length", int),
            threads=get("threads", int),
            server_threads=get("server-threads", int),
            node_wait_seconds=get("node-wait-seconds", float),
            reply_timeout_seconds=get("reply-timeout-seconds", float),
        )
        if settings.task != "news":
            raise ValueError(f"task {settings.task!r} is not available yet; known: ['news']")
        if settings.users < 1:
            raise ValueError(f"users must be >= 1, got {settings.users}")
        if min(settings.threads, settings.server_threads) < 1:
            raise ValueError("threads and server-threads must be >= 1")
        return settings
