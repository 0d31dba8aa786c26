"""ServerApp: the release loop. Train (or reuse) each backbone version on public data, send it
to every device, collect metrics-only replies and write rows.

The data were prepared by the data owner before the run (`swapfl run` / `swapfl prepare`);
the server reads only ``<data-dir>/public/``. Rendering tables is the report's job
(``swapfl report``, called by ``swapfl run``)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from logging import INFO, WARNING
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Message
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from threadpoolctl import threadpool_limits

from server.delivery import devices_holding, inline_records, release_orders
from server.progress import ProgressLine
from server.releases import build_or_load_release
from server.results import FAILURES_FILE, DeviceError, ResultsWriter, rows_from_reply
from simulations.settings import Settings
from strategies.registry import create_many
from tasks.base import PUBLIC_MANIFEST
from tasks.registry import get_task
from tasks.release import release_bundle

app = ServerApp()
REPLY_POLL_SECONDS = 0.1  # Flower's own send_and_receive polls every 3 s


def forward_library_logs() -> None:
    """Show the framework-free modules' logging (data preparation, loaders) in Flower's log."""
    flower = logging.getLogger("flwr")
    for name in ("simulations", "tasks", "backbones"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        for handler in flower.handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)


def wait_for_nodes(grid: Grid, expected: int, timeout: float) -> list[int]:
    """Nodes register asynchronously: wait until ``expected`` exist (sorted ids)."""
    deadline, last = time.monotonic() + timeout, -1
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= expected:
            return nodes[:expected]
        if len(nodes) != last:
            log(INFO, "waiting for devices: %d/%d registered", len(nodes), expected)
            last = len(nodes)
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {len(nodes)} of {expected} devices registered within {timeout:.0f}s; "
                "start the simulation with num-supernodes >= users"
            )
        time.sleep(1.0)


def run_name(settings: Settings) -> str:
    described = json.dumps(settings.to_record(), sort_keys=True, default=str)
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{hashlib.sha256(described.encode()).hexdigest()[:8]}"


@app.main()
def main(grid: Grid, context: Context) -> None:
    forward_library_logs()
    settings = Settings.from_run_config(context.run_config)
    # numpy's OpenBLAS pool hung on a small matvec in the simulation runtime's server thread;
    # numpy work here is small, torch gets its own explicit thread count.
    threadpool_limits(1, user_api="blas")
    torch.set_num_threads(settings.server_threads)
    strategies = list(create_many(settings.strategies, settings.strategy_options))
    log(INFO, "swapfl: task %s, %d users, schedule %s, strategies %s", settings.task,
        settings.users, " -> ".join(e.version for e in settings.schedule), ", ".join(strategies))
    data_dir = Path(settings.data_dir)
    if not settings.data_dir or not (data_dir / PUBLIC_MANIFEST).is_file():
        raise FileNotFoundError(
            f"data-dir {settings.data_dir!r} holds no prepared data; the data owner prepares "
            "it before the run: `swapfl prepare` (then pass data-dir) or `swapfl run`")
    releases = settings.work_dir / "releases"
    if settings.resume_run:
        writer = ResultsWriter.resume(settings.out_dir / settings.resume_run, settings.users,
                                      strategies)
        log(INFO, "resuming %s: %d rows kept, done: %s", writer.run_dir.name, writer.count,
            ", ".join(f"{v} seed {s}" for v, s in sorted(writer.completed)) or "nothing")
    else:
        writer = ResultsWriter(settings.out_dir / run_name(settings), settings.to_record())
    log(INFO, "results: %s", writer.path)
    nodes = wait_for_nodes(grid, settings.nodes, settings.node_wait_seconds)
    if settings.devices_per_node > 1:
        log(INFO, "%d devices on %d virtual nodes (%d per node)", settings.users, len(nodes),
            settings.devices_per_node)
    try:
        run_release_loop(grid, nodes, settings, data_dir, releases, writer, strategies)
    except BaseException as err:
        writer.finish(complete=False, error=type(err).__name__)
        raise
    writer.finish(complete=True)
    log(INFO, "wrote %d rows to %s", writer.count, writer.path)
    if writer.failures:
        log(WARNING, "%d device failures (missed or failed versions): %s", writer.failures,
            writer.run_dir / FAILURES_FILE)


def send_with_progress(grid: Grid, nodes: list[int], build: Callable[..., list[Message]],
                       timeout: float, window: int, label: str, unit: str = "device"
                       ) -> list[Message]:
    """Send one message per node with a progress bar over the replies; returns the replies
    that arrived within ``timeout`` seconds.

    At most ``window`` messages are in flight (0: all at once): Flower 1.41's simulation
    engine scans every stored message for every virtual node, ten times a second, so its
    delivery costs O(nodes x messages in flight) per sweep (measured: 6 us per pair, a 7.5 s
    sweep at 10,000 nodes x 128 messages). A small window keeps that scan short while the
    actors stay busy. ``build(nodes, ttl=...)`` makes the messages when they are sent, with the
    time left as their TTL, so an order never outlives the version it belongs to."""
    deadline = time.monotonic() + timeout
    queue, pending = list(nodes), set()
    bar = ProgressLine(label, len(queue), unit)
    replies: list[Message] = []
    while (queue or pending) and time.monotonic() < deadline:
        room = len(queue) if window <= 0 else window - len(pending)
        if queue and room > 0:
            batch, queue = queue[:room], queue[room:]
            pending.update(grid.push_messages(build(batch, ttl=deadline - time.monotonic())))
        arrived = list(grid.pull_messages(pending))
        replies.extend(arrived)
        pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
        if arrived:
            bar.update(len(replies))
        if pending:
            time.sleep(REPLY_POLL_SECONDS)
    return replies


def online_nodes(grid: Grid, nodes: list[int], timeout: float) -> list[int]:
    """The run's nodes that are online, waiting up to ``timeout`` seconds for the others (a
    restarting SuperNode comes back under its registered id)."""
    deadline = time.monotonic() + timeout
    while True:
        online = set(grid.get_node_ids())
        if set(nodes) <= online or time.monotonic() > deadline:
            return [node for node in nodes if node in online]
        time.sleep(1.0)


def run_release_loop(grid: Grid, nodes: list[int], settings: Settings, data_dir: Path,
                     releases: Path, writer: ResultsWriter, strategies: list[str]) -> None:
    """For each version: build/reuse the release, send it once per replicate seed to every
    device that is online, store the rows. A device that is offline, does not answer in time
    or answers with an error is recorded in failures.jsonl and the run goes on; at the next
    version it swaps from the last version it completed (its store holds it)."""
    spec = get_task(settings.task).metric_spec
    seeds = settings.replicate_seeds()
    for entry in settings.schedule:
        if all((entry.version, seed) in writer.completed for seed in seeds):
            log(INFO, "[%s] complete in the resumed run: skipped", entry.version)
            continue
        started = time.perf_counter()
        manifest = build_or_load_release(entry, settings, data_dir, releases)
        writer.phase("release", time.perf_counter() - started, version=entry.version)
        kind = "train.personalize" if entry.index == 1 else "train.swap"
        inline = None
        if settings.release_transport == "inline":
            bundle = release_bundle(releases, manifest.release_id)
            inline = inline_records(bundle)
            log(INFO, "[%s] release sent inline: %d files, %.1f MB, sha256 per file",
                entry.version, len(bundle.files), bundle.bytes / 1e6)
        for seed in seeds:
            if (entry.version, seed) in writer.completed:
                continue
            label = f"[{entry.version}]" + (f" seed {seed}" if len(seeds) > 1 else "")
            base = {"run": writer.run_dir.name, "task": settings.task, "seed": seed,
                    "version": entry.version, "version-index": entry.index,
                    "arch": manifest.arch}
            per_node = settings.devices_per_node
            reachable = online_nodes(grid, nodes, settings.node_wait_seconds)
            for node in sorted(set(nodes) - set(reachable)):
                writer.fail(base, node, "missed", "offline (no heartbeat) when the version "
                            "was sent", strategies, devices=per_node)
            order = ConfigRecord({"release-id": manifest.release_id, "version": entry.version,
                                  "seed": seed, "run": writer.run_dir.name})
            holders = set() if inline is None else devices_holding(
                grid, reachable, manifest.release_id, settings.node_wait_seconds)
            if inline is not None:
                log(INFO, "%s %d/%d devices hold the release already; sending it to %d",
                    label, len(holders), len(reachable), len(reachable) - len(holders))
            build = functools.partial(release_orders, manifest, order, kind=kind,
                                      inline=inline, holders=holders, releases=releases)
            started = time.perf_counter()
            log(INFO, "%s %s to %d %s", label, kind, len(reachable),
                "devices" if per_node == 1 else f"nodes ({per_node} devices each)")
            replies = send_with_progress(
                grid, reachable, build, settings.reply_timeout_seconds, settings.send_window,
                f"{label} {kind}", "device" if per_node == 1 else "node")
            answered = {reply.metadata.src_node_id for reply in replies}
            for node in sorted(set(reachable) - answered):
                writer.fail(base, node, "missed",
                            f"no reply within {settings.reply_timeout_seconds:.0f}s", strategies,
                            devices=per_node)
            done = 0
            for reply in replies:
                node = reply.metadata.src_node_id
                try:
                    rows, failed = rows_from_reply(reply, base, strategies, spec)
                except DeviceError as err:
                    writer.fail(base, node, "failed", str(err), strategies, devices=per_node)
                    continue
                writer.append(rows)
                done += len({row["user"] for row in rows})
                for failure in failed:
                    writer.fail(base, node, "failed", f"{failure.error_type} on the device",
                                strategies, device=failure.user_index)
            seconds = time.perf_counter() - started
            writer.phase("devices", seconds, version=entry.version, seed=seed,
                         nodes=len(reachable), replies=len(replies), completed=done,
                         devices=min(settings.users, len(reachable) * per_node))
            log(INFO, "%s %d/%d devices re-personalized in %.1fs", label, done,
                settings.users, seconds)
