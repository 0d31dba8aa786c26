"""The ClientApp as Flower calls it: personalize, then swap; replies are metrics only."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.app import app
from tasks.news import load_user, private_users
from tests.conftest import tiny_run_config


def _order(tiny_settings, world, releases, manifest, kind):
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 7, "task"
    order = ConfigRecord({
        "release-id": manifest.release_id, "releases": str(releases[0]),
        "version": manifest.version, "seed": 0, "run": "test-run",
    })
    return Message(RecordDict({"release": order}), dst_node_id=7, message_type=kind)


@pytest.fixture(scope="module")
def replies(tiny_settings, world, releases):
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 1, "num-partitions": 3},
                      state=RecordDict(),
                      run_config=tiny_run_config(tiny_settings.work_dir, tiny_settings.out_dir,
                                                 **{"data-dir": str(world)}))
    out = []
    for manifest, kind in zip(releases[1], ("train.personalize", "train.swap"), strict=True):
        out.append(app(_order(tiny_settings, world, releases, manifest, kind), context))
    return out


def test_replies_carry_metrics_for_every_track(replies):
    for reply in replies:
        assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
        metrics = reply.content["metrics"]
        for track in ("global", "top", "fala"):
            assert 0 <= metrics[f"{track}/auc"] <= 1
        assert metrics["user-index"] == 1 and metrics["downlink-bytes"] > 0
        assert reply.content["uplink"]["uplink-bytes"] > 0
    assert replies[1].content["metrics"]["fala/backbone-forwards"] > 0


def test_replies_hold_no_arrays_and_no_private_text(replies, world):
    user = private_users(world)[1]
    news, impressions = load_user(world, user)
    private_strings = {user} | {imp.impression_id for imp in impressions}
    private_strings |= {news[c].title for imp in impressions for c in imp.candidates}
    for reply in replies:
        assert all(isinstance(r, MetricRecord) for r in reply.content.values())
        for record in reply.content.values():
            for key, value in record.items():
                assert isinstance(value, (int, float))
                assert not any(s in key for s in private_strings)
