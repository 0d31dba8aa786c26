"""Releases over the wire: a device installs a release from the message's files after checking
every sha256, caches it by id, says so when asked, and refuses tampered or unsafe files."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.app import app
from server.delivery import QUERY, inline_records, release_orders
from tasks.news import private_users
from tasks.release import (
    RELEASE_FILES,
    RELEASE_INDEX,
    RELEASE_ORDER,
    ReleaseIntegrityError,
    has_release,
    install_release,
    open_release,
    release_bundle,
)
from tests.conftest import tiny_run_config


def _context(tiny_settings, world, tmp_path, user_index=1):
    """A deployed device: every private path comes from its own node config."""
    user = private_users(world)[user_index]
    node = {"user-id": user, "user-index": 7, "data-dir": str(world),
            "state-dir": str(tmp_path / "state"), "release-cache": str(tmp_path / "cache")}
    run_config = tiny_run_config(tiny_settings.work_dir, tiny_settings.out_dir,
                                 **{"data-dir": "", "release-transport": "inline"})
    return Context(run_id=1, node_id=7, node_config=node, state=RecordDict(),
                   run_config=run_config)


def _send(message, context):
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 7, "task"
    return app(message, context)


def _orders(manifest, releases, kind, holders=frozenset()):
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, "server"
    inline = inline_records(release_bundle(releases, manifest.release_id))
    order = ConfigRecord({"release-id": manifest.release_id, "version": manifest.version,
                          "seed": 0, "run": "run-1"})
    (message,) = release_orders(manifest, order, [7], kind, inline, set(holders), releases)
    return message


def _holds(context, release_id):
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, "server"
    query = Message(RecordDict({RELEASE_ORDER: ConfigRecord({"release-id": release_id})}),
                    dst_node_id=7, message_type=QUERY)
    return _send(query, context).content["metrics"]["has-release"]


def test_inline_release_installs_verifies_and_is_not_sent_twice(tiny_settings, world, releases,
                                                                tmp_path):
    folder, manifests = releases
    context = _context(tiny_settings, world, tmp_path)
    first, second = manifests
    assert _holds(context, first.release_id) == 0
    reply = _send(_orders(first, folder, "train.personalize"), context)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    bundle = release_bundle(folder, first.release_id)
    metrics = reply.content["metrics"]
    assert metrics["downlink-bytes"] == bundle.bytes > 0
    assert metrics["user-index"] == 7  # the node's public number, not its user id
    assert _holds(context, first.release_id) == 1
    cached = open_release(tmp_path / "cache", first.release_id)
    assert cached.backbone.sha256 == first.backbone["sha256"]
    # the swap's release goes inline; a resend of a held release carries no files
    reply = _send(_orders(second, folder, "train.swap"), context)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    again = _orders(second, folder, "train.swap", holders={7})
    assert RELEASE_FILES not in again.content.array_records
    reply = _send(again, context)
    assert not reply.has_error() and reply.content["metrics"]["downlink-bytes"] == 0
    assert (tmp_path / "state" / private_users(world)[1] / "run-1" / "seed-0").is_dir()


def test_a_tampered_release_is_refused_and_nothing_is_installed(tiny_settings, world, releases,
                                                                tmp_path):
    folder, manifests = releases
    message = _orders(manifests[0], folder, "train.personalize")
    files = message.content[RELEASE_FILES]
    name = next(iter(files))
    data = files[name].numpy().copy()
    data[0] ^= 1
    tampered = ArrayRecord({**{k: v for k, v in files.items()}, name: Array(data)})
    message.content[RELEASE_FILES] = tampered
    reply = _send(message, _context(tiny_settings, world, tmp_path))
    assert reply.has_error()
    assert not has_release(tmp_path / "cache", manifests[0].release_id)
    assert not any((tmp_path / "cache").glob(".install-*"))


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/../../b", ""])
def test_install_refuses_paths_outside_the_release(releases, tmp_path, name):
    folder, manifests = releases
    bundle = release_bundle(folder, manifests[0].release_id)
    import hashlib

    files = {name: b"x"}
    with pytest.raises(ReleaseIntegrityError):
        install_release(tmp_path, bundle.manifest.to_json(), files,
                        {name: hashlib.sha256(b"x").hexdigest()})
    assert not (tmp_path.parent / "escape").exists()


def test_files_without_hashes_are_refused(releases, tmp_path):
    folder, manifests = releases
    bundle = release_bundle(folder, manifests[0].release_id)
    files = {name: path.read_bytes() for name, path in bundle.files.items()}
    files["extra.bin"] = np.zeros(3, np.uint8).tobytes()
    with pytest.raises(ReleaseIntegrityError, match="without a hash"):
        install_release(tmp_path, bundle.manifest.to_json(), files, bundle.sha256)


def test_by_reference_orders_name_the_shared_store(releases):
    folder, manifests = releases
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, "server"
    order = ConfigRecord({"release-id": manifests[0].release_id, "version": "glove@1",
                          "seed": 0})
    messages = release_orders(manifests[0], order, [1, 2], "train.personalize", None, set(),
                              folder)
    for message in messages:
        assert message.content[RELEASE_ORDER]["releases"] == str(folder)
        assert RELEASE_FILES not in message.content and RELEASE_INDEX not in message.content
