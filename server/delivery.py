"""How a release reaches devices: by reference (simulation) or inline (deployment).

By reference, the order names the shared, hash-verified release store and every device opens
the release from it; downlink bytes are still charged as if the weights had been sent. Inline,
the server first asks each device whether its own cache holds the release (by id, which hashes
everything that determines the weights); devices that lack it get every file of the release in
the message (an ``ArrayRecord`` of bytes, chunked by Flower itself) with its sha256, and install
it only after verifying each one. A device never needs a path on the server's disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from tasks.release import RELEASE_FILES as FILES
from tasks.release import RELEASE_INDEX as INDEX
from tasks.release import RELEASE_ORDER as ORDER
from tasks.release import ReleaseBundle, ReleaseManifest

QUERY = "query.release"  # "do you hold this release?" -> MetricRecord {"has-release": 0|1}


def inline_records(bundle: ReleaseBundle) -> tuple[ArrayRecord, ConfigRecord]:
    """The release's files and their index; built once per version, shared by every message."""
    names = sorted(bundle.files)
    files = ArrayRecord({name: Array(np.fromfile(bundle.files[name], dtype=np.uint8))
                         for name in names})
    index = ConfigRecord({"manifest": bundle.manifest.to_json(), "names": names,
                          "sha256": [bundle.sha256[name] for name in names]})
    return files, index


def devices_holding(grid: Grid, nodes: list[int], release_id: str, timeout: float
                    ) -> set[int]:
    """The nodes whose own release cache already holds ``release_id`` (a device that does not
    answer in time is sent the weights)."""
    query = ConfigRecord({"release-id": release_id})
    messages = [Message(RecordDict({ORDER: query}), dst_node_id=node, message_type=QUERY,
                        ttl=timeout) for node in nodes]
    holders = set()
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if not reply.has_error() and reply.content.metric_records:
            metrics = next(iter(reply.content.metric_records.values()))
            if metrics.get("has-release", 0) == 1:
                holders.add(reply.metadata.src_node_id)
    return holders


def release_orders(manifest: ReleaseManifest, order: ConfigRecord, nodes: list[int], kind: str,
                   inline: tuple[ArrayRecord, ConfigRecord] | None, holders: set[int],
                   releases: Path, ttl: float | None = None) -> list[Message]:
    """One message per node: the order, plus the release itself inline for devices that lack
    it (``inline`` given), or the shared store's path (by reference). ``ttl``: seconds after
    which an order not yet picked up expires, so a device that comes back after the server
    gave up on it never runs a stale version."""
    messages = []
    for node in nodes:
        content = RecordDict({ORDER: order})
        if inline is None:
            content[ORDER] = ConfigRecord({**order, "releases": str(releases)})
        elif node not in holders:
            content[FILES], content[INDEX] = inline
        messages.append(Message(content, dst_node_id=node, message_type=kind, ttl=ttl))
    return messages
