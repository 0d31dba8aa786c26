"""Run settings read from Flower's run config (hyphenated keys in pyproject.toml).

The one typed view of a run's configuration, shared by the launcher, the ServerApp and the
ClientApp (so no process repeats a default). Framework-free: no Flower import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

from tasks.base import HeadTrainingConfig, SyntheticSpec

RELEASE_TRANSPORTS = ("reference", "inline")
"""How devices get a release: by reference to a shared, hash-verified release store (fast
simulation on one disk) or inline in the message (deployment: devices share no disk)."""


@dataclass(frozen=True)
class ScheduleEntry:
    """One backbone version: ``bert`` or ``mybert=/path/to/hf-dir`` in the schedule."""

    index: int
    name: str
    path: str | None = None

    @property
    def version(self) -> str:
        return f"{self.name}@{self.index}"

    @property
    def spec(self) -> str:
        """The entry as written in a schedule (``name`` or ``name=path``)."""
        return self.name if self.path is None else f"{self.name}={self.path}"


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
    """The whole run config, typed: one field per ``[tool.flwr.app.config]`` key (hyphens
    become underscores), built by one converter and recorded whole in the run's config.json.
    Components take their own config from it (``head_training()``, ``synthetic()``,
    ``pretrain()``) so no default is repeated anywhere else."""

    task: str
    data_source: str
    data_dir: str  # the prepared partitions; set by `swapfl run` / `swapfl prepare`
    work_dir: Path
    out_dir: Path
    schedule: tuple[ScheduleEntry, ...]
    strategies: str
    strategy_options: str
    personalize: str
    personalize_options: str
    users: int
    devices_per_node: int  # simulation: devices one virtual Flower node runs (default 1)
    seed: int
    seeds: str  # replicate seeds, e.g. "0 1 2 3 4"; empty: one replicate with ``seed``
    finetune_fraction: float
    synthetic_public_users: int
    synthetic_items: int
    synthetic_documents: int
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
    send_window: int  # messages in flight at once (0: all); see server.app.send_with_progress
    release_transport: str  # "reference" (shared release store) | "inline" (in the messages)
    fault_rate: float  # fraction of devices that fail on purpose at each swap (seeded)
    fault_mode: str  # "raise" (mid-fit) | "crash-store" (between a store write and its switch)
    resume_run: str  # set by `swapfl run --resume`: the run folder to continue

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> Settings:
        """Convert every key to its field's type; unknown or missing keys are errors."""
        hints = get_type_hints(cls)
        converters: dict[str, Callable[[Any], Any]] = {
            "Path": lambda v: Path(str(v)).expanduser().resolve(),
            "tuple": lambda v: tuple(parse_schedule(str(v))),  # the schedule
        }
        values: dict[str, Any] = {}
        for item in fields(cls):
            key = item.name.replace("_", "-")
            if key not in config:
                raise KeyError(f"run config lacks {key!r} (see [tool.flwr.app.config])")
            hint = hints[item.name]
            convert = converters.get(getattr(hint, "__name__", str(hint)), hint)
            try:
                values[item.name] = convert(config[key])
            except (TypeError, ValueError) as err:
                kind = getattr(hint, "__name__", str(hint))
                raise ValueError(f"run config {key!r}: expected {kind}, got {config[key]!r} "
                                 f"({err})") from err
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        from tasks.registry import task_names

        if self.task not in task_names():
            raise ValueError(f"task {self.task!r} is not registered; known: {task_names()}")
        if self.users < 1:
            raise ValueError(f"users must be >= 1, got {self.users}")
        if self.devices_per_node < 1:
            raise ValueError(f"devices-per-node must be >= 1, got {self.devices_per_node}")
        if min(self.threads, self.server_threads) < 1:
            raise ValueError("threads and server-threads must be >= 1")
        if not 0 < self.finetune_fraction < 1:
            raise ValueError(f"finetune-fraction must be in (0, 1), got "
                             f"{self.finetune_fraction}")
        if self.send_window < 0:
            raise ValueError(f"send-window must be >= 0 (0: every device at once), got "
                             f"{self.send_window}")
        if self.release_transport not in RELEASE_TRANSPORTS:
            raise ValueError(f"release-transport must be one of {RELEASE_TRANSPORTS}, got "
                             f"{self.release_transport!r}")
        self.replicate_seeds()
        self.faults()
        self.head_training()
        self.synthetic()

    @property
    def nodes(self) -> int:
        """Virtual Flower nodes of a simulation: ``users`` devices, ``devices_per_node``
        on each (the last may run fewer)."""
        return -(-self.users // self.devices_per_node)

    def replicate_seeds(self) -> tuple[int, ...]:
        """The device-side replicates of the run. Each seed re-runs every device's work
        (first personalization, example selection, initializations, batch order) in its own
        store namespace; the data, its chronological split and the server's releases stay
        those of ``seed`` (the split is the benchmark's protocol, the releases the server's)."""
        items = self.seeds.replace(",", " ").split()
        try:
            seeds = tuple(int(item) for item in items) or (self.seed,)
        except ValueError as err:
            raise ValueError(f"seeds must be integers, e.g. \"0 1 2 3 4\"; got "
                             f"{self.seeds!r}") from err
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers, got {self.seeds!r}")
        return seeds

    def to_record(self) -> dict[str, Any]:
        """Every resolved key, hyphenated, JSON-ready (the run's config.json)."""
        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, tuple):  # the schedule
                return " ".join(entry.spec for entry in value)
            return value

        return {item.name.replace("_", "-"): plain(getattr(self, item.name))
                for item in fields(self)}

    def faults(self) -> Any:
        """The fault-injection plan of the devices (none at the default rate 0)."""
        from client.faults import FaultPlan

        return FaultPlan(rate=self.fault_rate, mode=self.fault_mode, seed=self.seed)

    def head_training(self) -> HeadTrainingConfig:
        return HeadTrainingConfig(dim=self.head_dim, epochs=self.global_epochs,
                                  batch_size=self.global_batch_size, lr=self.global_lr,
                                  negatives=self.negatives, seed=self.seed)

    def synthetic(self) -> SyntheticSpec:
        return SyntheticSpec(seed=self.seed, users=self.users,
                             public_users=self.synthetic_public_users,
                             items=self.synthetic_items, documents=self.synthetic_documents)

    def pretrain(self) -> Any:
        from backbones.roberta_pretrain import RobertaPretrainConfig

        return RobertaPretrainConfig(
            hidden_size=self.roberta_hidden, num_layers=self.roberta_layers,
            num_heads=max(1, self.roberta_hidden // 32),
            intermediate_size=2 * self.roberta_hidden, max_length=self.max_length,
            steps=self.roberta_steps, seed=self.seed,
        )
