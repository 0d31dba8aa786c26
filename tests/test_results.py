"""The server's side of a reply: one device record or several (a node running several
devices), a device that reported its failure, malformed replies; failures counted per device
for resuming and for the CLI's summary."""

from __future__ import annotations

import json

import pytest
from flwr.app import Error, Message, Metadata, MetricRecord, RecordDict

from server.results import FAILURES_FILE, DeviceError, ResultsWriter, rows_from_reply
from simulations.cli import failure_counts
from strategies.schema import DEVICE_ERROR_TYPES, error_type_code, error_type_name
from tasks.registry import get_task

SPEC = get_task("news").metric_spec
QUALITY = {"auc": 0.6, "mrr": 0.4, "ndcg5": 0.5, "ndcg10": 0.55, "impressions": 3.0}


def _reply(records: dict[str, dict[str, float]] | None = None, error: str | None = None
           ) -> Message:
    metadata = Metadata(run_id=1, message_id="m", src_node_id=42, dst_node_id=1,
                        reply_to_message_id="r", group_id="", created_at=0.0, ttl=60.0,
                        message_type="train.swap")
    if error is not None:
        return Message(metadata=metadata, error=Error(code=0, reason=error))
    return Message(metadata=metadata, content=RecordDict(
        {name: MetricRecord(values) for name, values in records.items()}))


def _device(index: int) -> dict[str, float]:
    return {**{f"{track}/{k}": v for track in ("global", "fala") for k, v in QUALITY.items()},
            "user-index": float(index), "downlink-bytes": 10.0}


def test_a_node_running_two_devices_gives_rows_for_each_and_their_own_uplink():
    reply = _reply({"device-3": _device(3), "device-4": _device(4),
                    "uplink": {"device-3/uplink-bytes": 100.0, "device-4/uplink-bytes": 120.0}})
    rows, failures = rows_from_reply(reply, {"version": "bert@2"}, ["global", "fala"], SPEC)
    assert failures == []
    assert {(r["user"], r["strategy"]) for r in rows} == {
        (u, s) for u in ("user-003", "user-004") for s in ("global", "fala")}
    assert {r["user"]: r["uplink-bytes"] for r in rows} == {"user-003": 100.0,
                                                             "user-004": 120.0}


def test_a_device_that_reported_its_failure_is_a_failure_not_an_error():
    failed = {"failed": 1.0, "error-type": float(error_type_code(MemoryError())),
              "user-index": 4.0}
    reply = _reply({"device-3": _device(3), "device-4": failed,
                    "uplink": {"device-3/uplink-bytes": 1.0, "device-4/uplink-bytes": 1.0}})
    rows, failures = rows_from_reply(reply, {}, ["global", "fala"], SPEC)
    assert {r["user"] for r in rows} == {"user-003"}
    assert [(f.user_index, f.error_type) for f in failures] == [(4, "MemoryError")]


@pytest.mark.parametrize("reply, message", [
    (_reply(error="InjectedFault on the device"), "InjectedFault"),
    (_reply({"uplink": {"uplink-bytes": 1.0}}), "holds no device"),
    (_reply({"metrics": {k: v for k, v in _device(0).items() if not k.startswith("fala/")}}),
     "no metrics for \\['fala'\\]"),
    (_reply({"metrics": {**_device(0), "fala/auc": float("nan")}}), "non-finite auc"),
])
def test_error_replies_and_malformed_records_are_device_errors(reply, message):
    with pytest.raises(DeviceError, match=message):
        rows_from_reply(reply, {}, ["global", "fala"], SPEC)


def test_error_types_are_a_public_list_and_subclasses_map_to_their_base():
    class Custom(KeyError):
        pass

    assert error_type_name(error_type_code(Custom("private text"))) == "KeyError"
    assert error_type_name(error_type_code(ZeroDivisionError())) == "other"
    assert error_type_name(99) == "other" and len(set(DEVICE_ERROR_TYPES)) == len(
        DEVICE_ERROR_TYPES)


def _failures(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_resume_and_the_summary_count_failed_devices_not_nodes(tmp_path):
    """Node 7 runs devices 0 and 1: both failed at bert@2 (two records); node 8 (devices 2
    and 3) missed it: one record for 2 devices. All 4 devices are accounted for."""
    strategies = ["global"]
    rows = [{"version": v, "seed": 0, "user": f"user-{u:03d}", "strategy": "global"}
            for v in ("glove@1",) for u in range(4)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = {"version": "bert@2", "seed": 0, "strategy": "global"}
    _failures(tmp_path / FAILURES_FILE, [
        {**base, "node": 7, "device": 0, "devices": 1, "status": "failed", "reason": "x"},
        {**base, "node": 7, "device": 1, "devices": 1, "status": "failed", "reason": "x"},
        {**base, "node": 8, "devices": 2, "status": "missed", "reason": "y"}])
    writer = ResultsWriter.resume(tmp_path, users=4, strategies=strategies)
    assert writer.completed == {("glove@1", 0), ("bert@2", 0)} and writer.failures == 3
    assert failure_counts(tmp_path) == {("bert@2", "global"): 4}
    # with one of the four unaccounted for, bert@2 is run again
    _failures(tmp_path / FAILURES_FILE, [
        {**base, "node": 7, "device": 0, "devices": 1, "status": "failed", "reason": "x"},
        {**base, "node": 8, "devices": 2, "status": "missed", "reason": "y"}])
    assert ResultsWriter.resume(tmp_path, users=4, strategies=strategies).completed == {
        ("glove@1", 0)}


def test_phases_are_logged_for_the_scale_benchmark(tmp_path):
    from simulations.bench_scale import summarize_run

    writer = ResultsWriter(tmp_path / "run", {})
    writer.phase("release", 12.5, version="glove@1")
    writer.phase("devices", 4.0, version="glove@1", seed=0, nodes=2, replies=2, completed=4,
                 devices=4)
    writer.finish(complete=True)
    summary = summarize_run(tmp_path / "run")
    assert summary["complete"] is True
    version = summary["versions"]["glove@1"]
    assert version["release-seconds"] == 12.5 and version["seconds-per-device-version"] == 1.0
    assert version["messages-per-second"] == 0.5
