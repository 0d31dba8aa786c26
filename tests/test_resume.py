"""Resuming a stopped run: what counts as done, what is run again, and a device asked again
for a version it completed answers the same without redoing it."""

from __future__ import annotations

import json

from server.results import FAILURES_FILE, ResultsWriter


def _row(version, seed, user, strategy):
    return {"version": version, "seed": seed, "user": user, "strategy": strategy, "auc": 0.5}


def test_only_versions_every_device_completed_are_kept(tmp_path):
    strategies = ["global", "fala"]
    rows = [_row("glove@1", 0, u, s) for u in ("user-000", "user-001")
            for s in [*strategies, "stage0"]]
    rows += [_row("bert@2", 0, "user-000", s) for s in strategies]  # user-001 not yet
    rows += [_row("bert@2", 1, "user-000", s) for s in strategies]  # seed 1: a failure
    lines = "".join(json.dumps(r) + "\n" for r in rows) + '{"version": "robe'  # a cut line
    (tmp_path / "rows.jsonl").write_text(lines)
    (tmp_path / FAILURES_FILE).write_text("".join(
        json.dumps({"version": "bert@2", "seed": 1, "node": 7, "strategy": s,
                    "status": "failed", "reason": "x"}) + "\n" for s in strategies))
    (tmp_path / "status.json").write_text('{"complete": false}')
    writer = ResultsWriter.resume(tmp_path, users=2, strategies=strategies)
    assert writer.completed == {("glove@1", 0), ("bert@2", 1)}
    kept = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert {(r["version"], r["seed"]) for r in kept} == {("glove@1", 0), ("bert@2", 1)}
    assert writer.count == len(kept) == 8 and writer.failures == 1
    assert not (tmp_path / "status.json").exists()  # the run is open again


def test_a_device_asked_again_for_a_completed_version_answers_the_same(task_world, tmp_path):
    from client.device import Device
    from client.store import PrivateStore
    from strategies.first_personalization import create_first_personalization
    from strategies.registry import create_many

    world = task_world("aggression")
    glove, bert = world.models[:2]

    def device():
        return Device(glove.task, world.data, 0, PrivateStore(tmp_path), create_many("fala top"),
                      create_first_personalization("anchored-labels"),
                      world.settings.work_dir / "releases", seed=0)

    device().personalize(glove)
    first = device().swap(bert)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = device().swap(bert)  # the reply was lost: a resumed run asks again
    assert again == first
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files
