"""The server trains on public data only: no server code path opens a private partition."""

from __future__ import annotations

import sys
from pathlib import Path

from server.releases import build_or_load_release

_OPENED: list[str] | None = None


def _record_open(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(args[0]))


sys.addaudithook(_record_open)  # audit hooks cannot be removed; it records only when armed


def test_release_training_reads_public_partition_only(tiny_settings, world, tmp_path):
    global _OPENED
    _OPENED = []
    try:
        manifest = build_or_load_release(tiny_settings.schedule[0], tiny_settings, world,
                                         tmp_path / "releases")
    finally:
        opened, _OPENED = _OPENED, None
    assert manifest.training["public-valid"]["auc"] > 0.5  # it really trained on something
    resolved = {str(Path(p).resolve()) for p in opened}
    assert str((world / "public" / "behaviors.tsv").resolve()) in resolved
    private_root = str((world / "users").resolve())
    leaked = sorted(p for p in resolved if p.startswith(private_root))
    assert not leaked, f"server opened private files: {leaked}"


class _InProcessGrid:
    """Delivers the ServerApp's messages to the real ClientApp in this process, one virtual
    node per private user; file opens are recorded only while server code runs."""

    def __init__(self, run_config: dict, users: int) -> None:
        from flwr.app import Context, RecordDict

        self.contexts = {node: Context(run_id=1, node_id=node,
                                       node_config={"partition-id": node - 1,
                                                    "num-partitions": users},
                                       state=RecordDict(), run_config=run_config)
                         for node in range(1, users + 1)}
        self.replies, self.sent = {}, 0

    def get_node_ids(self):
        return list(self.contexts)

    def push_messages(self, messages):
        """Deliver now (like a grid whose devices answer instantly); replies wait for pull."""
        from flwr.supercore.task_identity import TaskIdentity

        from client.app import app

        global _OPENED
        recording, _OPENED = _OPENED, None  # the devices' own opens are theirs
        ids = []
        try:
            for message in messages:
                self.sent += 1
                message.metadata.__dict__["_message_id"] = f"message-{self.sent}"
                node = message.metadata.dst_node_id
                TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, node, "t"
                self.replies[message.metadata.message_id] = app(message, self.contexts[node])
                ids.append(message.metadata.message_id)
            return ids
        finally:
            _OPENED = recording

    def pull_messages(self, message_ids):
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]


def test_whole_server_main_never_opens_a_private_file(tiny_settings, world, tmp_path):
    """The ServerApp's main from start to rows: it opens public/ files, never users/ nor the
    data owner's partition.json (which lists the private user ids)."""
    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from server.app import main
    from simulations.report import read_rows
    from tests.conftest import tiny_run_config

    run_config = tiny_run_config(tmp_path / "work", tmp_path / "results",
                                 schedule=tiny_settings.to_record()["schedule"],
                                 strategies="global fala", **{"data-dir": str(world)})
    grid = _InProcessGrid(run_config, tiny_settings.users)
    global _OPENED
    _OPENED = []
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, "server"
    try:
        main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                           run_config=run_config))
    finally:
        opened, _OPENED = _OPENED, None
    (run_dir,) = (tmp_path / "results").iterdir()
    rows = read_rows(run_dir)
    # first version: stage0 + 2 tracks per user; the swap: the 2 tracks
    assert len(rows) == tiny_settings.users * (3 + 2)
    resolved = {str(Path(p).resolve()) for p in opened}
    assert str((world / "public" / "behaviors.tsv").resolve()) in resolved
    private = str((world / "users").resolve())
    leaked = sorted(p for p in resolved
                    if p.startswith(private) or p.endswith("partition.json"))
    assert not leaked, f"server opened private files: {leaked}"
