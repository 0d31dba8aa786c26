"""Result collection: verify device replies and append one row per (version, user, strategy)."""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Message

from strategies.schema import error_type_name
from tasks.base import MetricSpec
from tasks.files import atomic_write

log = logging.getLogger("flwr")

DEVICE_KEYS = ("user-index", "downlink-bytes")
FAILURES_FILE = "failures.jsonl"
UPLINK_RECORD = "uplink"  # the guard's record of uplink bytes (client/guard.py)
PHASES_FILE = "phases.jsonl"
STATUS_FILE = "status.json"


class DeviceError(RuntimeError):
    """A device replied with an error (its traceback is in the message)."""


@dataclass(frozen=True)
class DeviceFailure:
    """A device (hosted beside others on one node) that reported it failed, by error type."""

    user_index: int
    error_type: str


def rows_from_reply(reply: Message, base: dict[str, Any], strategies: Iterable[str],
                    metrics_spec: MetricSpec) -> tuple[list[dict[str, Any]], list[DeviceFailure]]:
    """Split a node's reply into rows: one metrics record per device it runs, each a flat
    ``<track>/<metric>`` record; check that every compared track is there and carries the
    task's metrics with a finite primary one. A device that reported its failure comes back
    as a ``DeviceFailure``; an error reply or a malformed record raises ``DeviceError``."""
    if reply.has_error():
        raise DeviceError(f"node {reply.metadata.src_node_id}: {reply.error.reason}")
    uplink = reply.content.metric_records.get(UPLINK_RECORD, {})
    rows: list[dict[str, Any]] = []
    failures: list[DeviceFailure] = []
    for name, record in reply.content.metric_records.items():
        if name == UPLINK_RECORD:
            continue
        metrics = {k: float(v) for k, v in record.items()}
        sent = uplink.get(f"{name}/uplink-bytes", uplink.get("uplink-bytes"))
        if sent is not None:
            metrics["uplink-bytes"] = float(sent)
        if metrics.get("failed") and "user-index" in metrics:
            failures.append(DeviceFailure(int(metrics["user-index"]),
                                          error_type_name(metrics.get("error-type", 0))))
            continue
        rows.extend(_device_rows(reply.metadata.src_node_id, metrics, base, strategies,
                                 metrics_spec))
    if not rows and not failures:
        raise DeviceError(f"node {reply.metadata.src_node_id}: the reply holds no device")
    return rows, failures


def _device_rows(node: int, metrics: dict[str, float], base: dict[str, Any],
                 strategies: Iterable[str], metrics_spec: MetricSpec) -> list[dict[str, Any]]:
    missing = [k for k in DEVICE_KEYS if k not in metrics]
    if missing:
        raise DeviceError(f"node {node}: reply lacks {missing}")
    per_track: dict[str, dict[str, float]] = defaultdict(dict)
    for key, value in metrics.items():
        track, sep, name = key.partition("/")
        if sep:
            per_track[track][name] = value
    expected = set(strategies)
    if not expected <= set(per_track):
        raise DeviceError(f"node {node}: no metrics for {sorted(expected - set(per_track))}")
    user = f"user-{int(metrics['user-index']):03d}"
    device = {k: v for k, v in metrics.items() if "/" not in k and k != "user-index"}
    rows = []
    primary = metrics_spec.primary
    for track, values in per_track.items():
        missing_metrics = [m for m in metrics_spec.names if m not in values]
        if missing_metrics:
            raise DeviceError(f"{user} {track}: reply lacks the task's metrics "
                              f"{missing_metrics}")
        if not math.isfinite(values[primary]):
            raise DeviceError(f"{user} {track}: non-finite {primary} (no usable test "
                              "example?)")
        rows.append({**base, "user": user, "strategy": track, **values, **device})
    return rows


def _records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a file; a last line cut by a killed run is dropped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class ResultsWriter:
    """Appends rows to ``<out-dir>/<run>/rows.jsonl`` (one JSON object per line), device
    failures to ``failures.jsonl``, the wall time of each phase to ``phases.jsonl``, and the
    run's outcome to ``status.json`` at its end."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        """``config`` is the run's whole resolved configuration, kept as config.json."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
        self.path = self.run_dir / "rows.jsonl"
        self.path.write_text("")
        self.count = 0
        self.failures = 0
        self.completed: set[tuple[str, int]] = set()

    @classmethod
    def resume(cls, run_dir: Path, users: int, strategies: list[str]) -> ResultsWriter:
        """Reopen a run that stopped: keep the rows and failures of every (version, seed)
        that all ``users`` devices completed (rows of every strategy, or a recorded
        failure), drop the rest (they are run again), and list the completed pairs."""
        writer = cls.__new__(cls)
        writer.run_dir, writer.path = Path(run_dir), Path(run_dir) / "rows.jsonl"
        if not writer.path.is_file():
            raise FileNotFoundError(f"{writer.path} not found: nothing to resume")
        rows, failures = _records(writer.path), _records(writer.run_dir / FAILURES_FILE)
        done: dict[tuple[str, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for row in rows:
            done[(row["version"], int(row["seed"]))][row["user"]] += 1
        failed: dict[tuple[str, int], dict[tuple[int, int], int]] = defaultdict(dict)
        for record in failures:
            where = (int(record["node"]), int(record.get("device", -1)))
            failed[(record["version"], int(record["seed"]))][where] = int(
                record.get("devices", 1))
        writer.completed = {
            pair for pair in set(done) | set(failed)
            if sum(n >= len(strategies) for n in done[pair].values())
            + sum(failed[pair].values()) >= users}
        keep = [r for r in rows if (r["version"], int(r["seed"])) in writer.completed]
        kept_failures = [f for f in failures
                         if (f["version"], int(f["seed"])) in writer.completed]
        atomic_write(writer.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
        atomic_write(writer.run_dir / FAILURES_FILE,
                     "".join(json.dumps(f, sort_keys=True) + "\n" for f in kept_failures))
        (writer.run_dir / STATUS_FILE).unlink(missing_ok=True)
        writer.count = len(keep)
        writer.failures = len({(f["version"], f["seed"], f["node"], f.get("device"))
                               for f in kept_failures})
        return writer

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        with self.path.open("a") as handle:
            for row in sorted(rows, key=lambda r: (r["user"], r["strategy"])):
                handle.write(json.dumps(row, sort_keys=True) + "\n")
                self.count += 1

    def fail(self, base: dict[str, Any], node: int, status: str, reason: str,
             strategies: Iterable[str], device: int | None = None, devices: int = 1) -> None:
        """Record that a device missed or failed a version: one failure row per strategy whose
        row is missing. It is named by its Flower node id (and, on a node that runs several
        devices, by ``device``, its public number as in the rows), never by its user;
        ``devices`` is how many devices a missed node ran. ``reason`` is the device's error
        type or the server's observation, never a device's text."""
        where = {"node": int(node), "devices": int(devices)}
        if device is not None:
            where["device"] = int(device)
        with (self.run_dir / FAILURES_FILE).open("a") as handle:
            for strategy in strategies:
                record = {**base, **where, "strategy": strategy, "status": status,
                          "reason": reason}
                handle.write(json.dumps(record, sort_keys=True) + "\n")
        self.failures += 1
        log.warning("[%s] node %d%s %s: %s", base.get("version"), node,
                    "" if device is None else f" device {device}", status, reason)

    def phase(self, name: str, seconds: float, **details: Any) -> None:
        """Log the wall time of one phase of the run (a release built or loaded, a version's
        device round): what ``swapfl bench scale`` and capacity planning read."""
        record = {"phase": name, "seconds": round(seconds, 3), **details}
        with (self.run_dir / PHASES_FILE).open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def finish(self, complete: bool, error: str | None = None) -> None:
        """Write status.json: whether the run reached its end (Flower's exit code does not
        say), with its row and failure counts."""
        status = {"complete": complete, "rows": self.count, "failures": self.failures}
        if error:
            status["error"] = error
        (self.run_dir / STATUS_FILE).write_text(json.dumps(status, indent=2))
