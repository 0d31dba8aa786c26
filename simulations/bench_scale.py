"""Benchmark: how a simulation scales with its number of virtual devices.

For each size it runs the scenario end to end exactly as ``swapfl run`` does (data owner's
preparation, then a real ``flwr run`` on Flower's simulation engine with Ray), while a sampler
sums the proportional set size (PSS) of the whole process tree (this process, the SuperLink,
the simulation runtime, Ray and its workers) every ``sample_seconds``. From the run's own
``phases.jsonl`` it reports per version the release time and the device round: wall seconds,
seconds per device-version, messages per second. Every device still does and is charged its
full work; nothing is skipped to go faster.

``profile_devices`` > 0 adds where a device's time goes: the ClientApp's handlers run in this
process under ``cProfile`` for that many devices per version, on the same prepared data,
releases and (warm) shared feature store, split into named parts (inclusive times of
functions that do not call each other; "other" is the rest). cProfile inflates Python-heavy
parts; the wall figures come from the real run.
"""

from __future__ import annotations

import cProfile
import json
import logging
import os
import platform
import pstats
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from simulations.launcher import process_tree, run_simulation, virtual_nodes

log = logging.getLogger(__name__)

PROFILE_PARTS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("message setup: run config, user lookup, strategy objects", (
        ("simulations/settings.py", "from_run_config"), ("client/app.py", "_user_of"),
        ("strategies/registry.py", "create_many"),
        ("strategies/first_personalization.py", "create_first_personalization"))),
    ("partition loading", (("tasks/", "load_user@client/app.py:device|_device"),)),
    ("release opening", (("tasks/release.py", "open_release"), ("client/app.py", "_install"))),
    ("backbone forwards + shared feature store", (("tasks/release.py", "features"),)),
    ("example selection (KwikBucks)", (("strategies/fala/selection.py", "select_examples"),)),
    ("ridge solves", (("strategies/fala/ridge.py", "fit"),)),
    ("evaluation metrics", (("tasks/", "evaluate@client/device.py:_evaluate"),)),
    ("store writes (fsync included)", (("client/store.py", "save"),)),
    ("store reads", (("client/store.py", "load"), ("client/store.py", "exists"))),
)
"""Named parts of a device's handler: (file, function) pairs whose inclusive times add up
(none calls another); ``function@file:caller`` counts only the calls from that caller
(``a|b``: either)."""


def tree_pss_bytes(root: int) -> int:
    """Proportional set size of ``root`` and all its descendants (shared pages split among
    the processes sharing them, so the sum is the tree's real footprint)."""
    total = 0
    for pid in process_tree(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return total


class PssSampler:
    """Samples ``tree_pss_bytes`` in a background thread; ``peak_`` is the largest sum."""

    def __init__(self, root: int | None = None, interval: float = 1.0) -> None:
        self.root = os.getpid() if root is None else root
        self.interval = interval
        self.peak_ = 0
        self.samples_ = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="pss-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_ = max(self.peak_, tree_pss_bytes(self.root))
            self.samples_ += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """Per version, from the run's phases.jsonl: release seconds and the device round."""
    versions: dict[str, dict[str, Any]] = {}
    for record in _read_jsonl(run_dir / "phases.jsonl"):
        entry = versions.setdefault(record["version"], {})
        if record["phase"] == "release":
            entry["release-seconds"] = record["seconds"]
        elif record["phase"] == "devices":
            seconds, devices = record["seconds"], max(int(record["devices"]), 1)
            entry.update({
                "device-seconds": seconds, "devices": record["devices"],
                "replies": record["replies"], "completed": record["completed"],
                "seconds-per-device-version": seconds / devices,
                "messages-per-second": record["replies"] / seconds if seconds else None})
    status_file = run_dir / "status.json"
    status = json.loads(status_file.read_text()) if status_file.is_file() else {}
    return {"run": run_dir.name, "complete": bool(status.get("complete")),
            "rows": status.get("rows"), "failures": status.get("failures"),
            "versions": versions}


def _profile_parts(stats: pstats.Stats, total: float) -> dict[str, float]:
    """Seconds per named part (``PROFILE_PARTS``) and the rest, from one profile."""
    parts: dict[str, float] = {}
    for label, functions in PROFILE_PARTS:
        seconds = 0.0
        for where, spec in functions:
            name, _, caller = spec.partition("@")
            for (path, _, function), (_, _, _, cumulative, callers) in stats.stats.items():
                if function != name or where not in path:
                    continue
                if not caller:
                    seconds += cumulative
                    continue
                caller_file, _, caller_functions = caller.partition(":")
                seconds += sum(timing[3] for (cpath, _, cfunc), timing in callers.items()
                               if cfunc in caller_functions.split("|")
                               and cpath.endswith(caller_file))
        parts[label] = seconds
    parts["other (Python, numpy, torch glue)"] = max(total - sum(parts.values()), 0.0)
    return parts


def _handle(config: dict[str, Any], node: int, kind: str, order: dict[str, Any]) -> None:
    """One message to virtual node ``node``, handled by the ClientApp in this process."""
    from flwr.app import ConfigRecord, Context, Message, RecordDict

    from client.app import app

    context = Context(run_id=1, node_id=1, state=RecordDict(), run_config=config,
                      node_config={"partition-id": node, "num-partitions": node + 1})
    reply = app(Message(RecordDict({"release": ConfigRecord(order)}), dst_node_id=1,
                        message_type=kind), context)
    if reply.has_error():
        raise RuntimeError(f"profiled node {node} failed at {order['version']}: "
                           f"{reply.error.reason[-500:]}")


def profile_devices(config: dict[str, Any], devices: int) -> dict[str, Any]:
    """The ClientApp's handlers in this process under cProfile, ``devices`` devices per
    version, in store namespaces of their own (removed afterwards). Each version is first
    handled once unprofiled (a warm pass: the release opened, the public features stored,
    as for all but a node's first device in a real run), then again under the profiler."""
    from flwr.supercore.task_identity import TaskIdentity

    from server.releases import build_or_load_release
    from simulations.settings import Settings

    settings = Settings.from_run_config(config)
    data_dir, releases = Path(config["data-dir"]), settings.work_dir / "releases"
    nodes = -(-min(devices, settings.users) // settings.devices_per_node)
    devices = min(nodes * settings.devices_per_node, settings.users)
    run = f"bench-profile-{os.getpid()}"
    # a Message built outside Flower needs a task identity (Flower's own tests do the same)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, "bench-profile"
    result: dict[str, Any] = {"devices": devices}
    try:
        for entry in settings.schedule:
            manifest = build_or_load_release(entry, settings, data_dir, releases)
            kind = "train.personalize" if entry.index == 1 else "train.swap"
            order = {"release-id": manifest.release_id, "releases": str(releases),
                     "version": entry.version, "seed": settings.seed}
            for node in range(nodes):  # warm: releases opened, public features stored
                _handle(config, node, kind, {**order, "run": f"{run}-warm"})
            profiler = cProfile.Profile()
            started = time.perf_counter()
            for node in range(nodes):
                profiler.enable()
                _handle(config, node, kind, {**order, "run": run})
                profiler.disable()
            wall = time.perf_counter() - started
            stats = pstats.Stats(profiler)
            total = stats.total_tt  # type: ignore[attr-defined]
            result[entry.version] = {
                "wall-ms-per-device": 1000 * wall / devices,
                "profiled-ms-per-device": 1000 * total / devices,
                "parts-ms-per-device": {label: 1000 * seconds / devices for label, seconds
                                        in _profile_parts(stats, total).items()},
            }
            log.info("profile %s: %.1f ms per device (%.1f under the profiler)", entry.version,
                     1000 * wall / devices, 1000 * total / devices)
    finally:
        for user_dir in (settings.work_dir / "devices").glob(f"*/{run}*"):
            shutil.rmtree(user_dir, ignore_errors=True)
    return result


def _newest_run(out_dir: Path, since: float) -> Path | None:
    runs = [p.parent for p in Path(out_dir).glob("*/rows.jsonl") if p.stat().st_mtime >= since]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def bench_scale(sizes: Sequence[int], prepare: Callable[[int], dict[str, Any]], out_file: Path,
                cpus_per_device: int = 1, profile: int = 0, sample_seconds: float = 1.0,
                timeout: float | None = None) -> dict[str, Any]:
    """For each size, prepare its run config (``prepare(users)``: the data owner's step,
    timed) and run it; the figures go to ``out_file`` after every size (a long benchmark
    keeps what it measured if stopped)."""
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "cpus-per-device": cpus_per_device, "sizes": {}}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    for users in sizes:
        started = time.perf_counter()
        config = prepare(users)
        prepare_seconds = time.perf_counter() - started
        log.info("scale: %d devices on %d virtual nodes, strategies %s, schedule %s", users,
                 virtual_nodes(config), config["strategies"], config["schedule"])
        since = time.time()
        started = time.perf_counter()
        with PssSampler(interval=sample_seconds) as sampler:
            code = run_simulation(config, virtual_nodes(config),
                                  cpus_per_node=cpus_per_device,
                                  timeout=timeout)
        wall = time.perf_counter() - started
        run_dir = _newest_run(Path(config["out-dir"]), since)
        size: dict[str, Any] = {
            "users": users, "virtual-nodes": virtual_nodes(config),
            "devices-per-node": int(config["devices-per-node"]), "exit-code": code,
            "wall-seconds": wall,
            "prepare-seconds": prepare_seconds,
            "peak-pss-bytes": sampler.peak_, "pss-samples": sampler.samples_,
            **(summarize_run(run_dir) if run_dir else {"complete": False})}
        device_seconds = sum(v.get("device-seconds", 0) for v in size.get("versions",
                                                                         {}).values())
        device_versions = sum(v.get("devices", 0) for v in size.get("versions", {}).values())
        size["seconds-per-device-version"] = (device_seconds / device_versions
                                              if device_versions else None)
        if profile and run_dir:
            size["profile"] = profile_devices(config, profile)
        result["sizes"][str(users)] = size
        out_file.write_text(json.dumps(result, indent=2))
        log.info("scale: %d devices in %.0fs, %.3fs per device-version, peak PSS %.2f GiB",
                 users, wall, size["seconds-per-device-version"] or float("nan"),
                 sampler.peak_ / 2**30)
    return result
