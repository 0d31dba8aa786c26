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


def _hosted_replies(tiny_settings, world, releases, run, per_node, fault_rate=0.0,
                    partition=0):
    config = tiny_run_config(tiny_settings.work_dir, tiny_settings.out_dir,
                             **{"data-dir": str(world), "devices-per-node": per_node,
                                "fault-rate": fault_rate})
    context = Context(run_id=1, node_id=7, state=RecordDict(), run_config=config,
                      node_config={"partition-id": partition, "num-partitions": 3})
    out = []
    for manifest, kind in zip(releases[1], ("train.personalize", "train.swap"), strict=True):
        message = _order(tiny_settings, world, releases, manifest, kind)
        message.content["release"]["run"] = run
        out.append(app(message, context))
    return out


def test_a_node_running_two_devices_gives_each_its_own_record(tiny_settings, world, releases):
    """devices-per-node = 2: node 0 runs users 0 and 1, one record and one uplink size each,
    with exactly the metrics each device has on a node of its own."""
    hosted = _hosted_replies(tiny_settings, world, releases, "hosted", per_node=2)
    for index in (0, 1):
        alone = _hosted_replies(tiny_settings, world, releases, f"alone-{index}", per_node=1,
                                partition=index)
        for reply, single in zip(hosted, alone, strict=True):
            assert not reply.has_error() and not single.has_error()
            mine = dict(reply.content[f"device-{index}"])
            theirs = dict(single.content["metrics"])
            assert mine["user-index"] == index
            assert {k: v for k, v in mine.items() if "seconds" not in k and "peak" not in k} \
                == {k: v for k, v in theirs.items() if "seconds" not in k and "peak" not in k}
            assert reply.content["uplink"][f"device-{index}/uplink-bytes"] > 0


def test_a_failing_hosted_device_reports_its_error_type_and_spares_the_other(
        tiny_settings, world, releases):
    from client.faults import FaultPlan
    from strategies.schema import error_type_name

    version = releases[1][1].version
    draws = [FaultPlan(seed=tiny_settings.seed).draw(user, version) for user in (0, 1)]
    rate = sum(draws) / 2  # between the two devices' draws: exactly one is struck
    struck = min((0, 1), key=lambda user: draws[user])
    replies = _hosted_replies(tiny_settings, world, releases, "hosted-fault", per_node=2,
                              fault_rate=rate)
    swap = replies[1]
    assert not swap.has_error()
    failed = dict(swap.content[f"device-{struck}"])
    assert failed["failed"] == 1.0 and error_type_name(failed["error-type"]) == "InjectedFault"
    assert set(failed) == {"failed", "error-type", "user-index"}  # nothing else leaves
    healthy = dict(swap.content[f"device-{1 - struck}"])
    assert "failed" not in healthy and 0 <= healthy["fala/auc"] <= 1
