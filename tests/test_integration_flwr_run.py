"""End to end: a real ``flwr run`` simulation (SuperLink + simulation runtime + Ray) with tiny
settings, run twice: rows for every (version, user, strategy), finite metrics, the second run
reuses the release cache and reproduces the metrics, and no Flower process is left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.faults import FaultPlan
from simulations.report import read_rows
from strategies.registry import names
from tests.conftest import tiny_run_config

QUALITY = ("auc", "mrr", "ndcg5", "ndcg10")

pytestmark = pytest.mark.integration

STRATEGIES = ("global", "top", "fala")


def _flower_processes() -> set[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return {line.strip() for line in out.splitlines()
            if "flower-superlink" in line or "flwr-simulation" in line or "raylet" in line}


def _deterministic(row: dict) -> dict:
    """A row without what differs between identical runs: its run name and wall-clock
    measurements (seconds, the resident-memory peak)."""
    return {k: v for k, v in row.items()
            if k != "run" and "seconds" not in k and k != "peak-memory-bytes"}


def _run(tmp_path, out_name, **overrides):
    config = tiny_run_config(tmp_path / "work", tmp_path / out_name, users=2,
                             schedule="glove bert roberta", strategies=" ".join(STRATEGIES),
                             **overrides)
    command = [sys.executable, "-m", "simulations.cli", "run", "--timeout", "900"]
    for key, value in config.items():
        command += ["--set", f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1000)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    (run_dir,) = (tmp_path / out_name).iterdir()
    return read_rows(run_dir), log


def test_flwr_run_end_to_end_twice(tmp_path):
    before = _flower_processes()
    rows, first_log = _run(tmp_path, "first")
    versions = ("glove@1", "bert@2", "roberta@3")
    keys = {(r["version"], r["user"], r["strategy"]) for r in rows}
    expected = {(v, u, s) for v in versions for u in ("user-000", "user-001") for s in STRATEGIES}
    assert expected <= keys
    assert len(rows) == len(keys)  # one row per (version, user, strategy)
    for row in rows:
        for metric in QUALITY:
            assert 0.0 <= row[metric] <= 1.0, row
        assert row["downlink-bytes"] > 0 and row["uplink-bytes"] > 0
    assert "release cache miss" in first_log
    assert "train.swap 100%|" in first_log  # the replies' progress bar

    # Again with a second replicate seed beside the first, and both devices on one virtual
    # node (devices-per-node = 2): replicate 0 reproduces the first run bitwise from the
    # release cache, replicate 1 has its own rows and its own stores.
    again, second_log = _run(tmp_path, "second", seeds="0 1", **{"devices-per-node": 2})
    assert "2 devices on 1 virtual nodes" in second_log
    assert "release cache hit" in second_log and "release cache miss" not in second_log
    assert {r["seed"] for r in again} == {0, 1}
    assert len(again) == 2 * len(rows)
    by_key = {(r["version"], r["user"], r["strategy"]): r for r in rows}
    for row in (r for r in again if r["seed"] == 0):
        for metric in QUALITY:
            assert row[metric] == by_key[(row["version"], row["user"], row["strategy"])][metric]
    # each run keeps its own stores: the first run's seed 0 was not overwritten by the second
    first_run, second_run = rows[0]["run"], again[0]["run"]
    users = [p for p in (tmp_path / "work" / "devices").iterdir() if not p.name.startswith(".")]
    assert len(users) == 2
    for user in users:
        assert sorted(p.name for p in (user / first_run).iterdir()) == ["seed-0"]
        assert sorted(p.name for p in (user / second_run).iterdir()) == ["seed-0", "seed-1"]

    # Again with seeded faults: the struck device fails its swap, the run goes on, the other
    # device's rows are bitwise those of the fault-free run, and the struck one catches up.
    plan = FaultPlan(rate=0.3, seed=0)
    struck = {(f"user-{u:03d}", v) for u in (0, 1) for v in versions[1:] if plan.strikes(u, v)}
    assert struck == {("user-000", "bert@2")}  # what this test is about; a changed draw fails
    # (one order in flight at a time: the send window changes no result either)
    faulty, _ = _run(tmp_path, "faulty", **{"fault-rate": 0.3, "send-window": 1})
    (faulty_dir,) = (tmp_path / "faulty").iterdir()
    failures = [json.loads(line) for line in (faulty_dir / "failures.jsonl").read_text()
                .splitlines()]
    assert {(f["version"], f["strategy"], f["status"]) for f in failures} == {
        ("bert@2", s, "failed") for s in STRATEGIES}
    assert all("InjectedFault" in f["reason"] for f in failures)
    assert json.loads((faulty_dir / "status.json").read_text())["complete"] is True
    faulty_keys = {(r["version"], r["user"], r["strategy"]) for r in faulty}
    assert faulty_keys == keys - {(v, u, s) for u, v in struck for s in STRATEGIES}
    for row in faulty:
        if row["user"] == "user-001" or row["version"] == "glove@1":
            reference = by_key[(row["version"], row["user"], row["strategy"])]
            assert _deterministic(row) == _deterministic(reference)

    # Killed after the MiniLM swap, then resumed: it ends with exactly the rows of the
    # uninterrupted run (no duplicates), without retraining a release.
    killed_dir = _kill_after(tmp_path, "killed", lambda rows: sum(
        r["version"] == "bert@2" for r in rows) == 2 * len(STRATEGIES))
    resumed = subprocess.run([sys.executable, "-m", "simulations.cli", "run", "--resume",
                              str(killed_dir), "--timeout", "900"],
                             capture_output=True, text=True, timeout=1000)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-6000:]
    assert "release cache miss" not in log and "[glove@1] complete in the resumed run" in log
    final = read_rows(killed_dir)
    assert sorted((r["version"], r["user"], r["strategy"]) for r in final) == sorted(keys)
    for row in final:
        reference = by_key[(row["version"], row["user"], row["strategy"])]
        assert _deterministic(row) == _deterministic(reference)
    assert json.loads((killed_dir / "status.json").read_text())["complete"] is True
    assert _flower_processes() <= before, "a Flower or Ray process outlived the run"


def _kill_after(tmp_path, out_name, condition) -> Path:
    """Start a run, kill it (SIGTERM) once its rows satisfy ``condition``; its folder."""
    config = tiny_run_config(tmp_path / "work", tmp_path / out_name, users=2,
                             schedule="glove bert roberta", strategies=" ".join(STRATEGIES))
    command = [sys.executable, "-m", "simulations.cli", "run", "--timeout", "900"]
    for key, value in config.items():
        command += ["--set", f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"]
    with open(tmp_path / f"{out_name}.log", "w") as log:
        run = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and run.poll() is None:
                found = list((tmp_path / out_name).glob("*/rows.jsonl"))
                try:
                    if found and condition(read_rows(found[0])):
                        break
                except ValueError:  # a line being written
                    pass
                time.sleep(0.2)
            run.send_signal(signal.SIGTERM)  # the launcher stops everything it started
            run.wait(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
    (run_dir,) = (tmp_path / out_name).iterdir()
    assert not (run_dir / "status.json").is_file() or '"complete": true' not in (
        run_dir / "status.json").read_text(), "the run finished before it could be killed"
    return run_dir


def test_flwr_run_on_a_classification_task_with_every_strategy(tmp_path, tiny_bert_dir):
    """The same app on another registered task, every registered strategy as a track: each
    row carries the task's own metrics (no news code) and its costs pass the uplink guard."""
    every = names()
    config = tiny_run_config(tmp_path / "work", tmp_path / "out", users=2, task="aggression",
                             schedule=f"glove tinybert={tiny_bert_dir}",
                             strategies=" ".join(every),
                             **{"synthetic-documents": 200, "synthetic-public-users": 30,
                                "synthetic-items": 40})
    command = [sys.executable, "-m", "simulations.cli", "run", "--timeout", "900"]
    for key, value in config.items():
        command += ["--set", f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1000)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    (run_dir,) = (tmp_path / "out").iterdir()
    rows = read_rows(run_dir)
    keys = {(r["version"], r["user"], r["strategy"]) for r in rows}
    assert {(v, u, s) for v in ("glove@1", "tinybert@2") for u in ("user-000", "user-001")
            for s in every} <= keys
    for row in rows:
        assert row["task"] == "aggression" and "auc" not in row
        for metric in ("accuracy", "f1", "macro-f1"):
            assert 0.0 <= row[metric] <= 1.0, row
    swapped = {r["strategy"]: r for r in rows if r["version"] == "tinybert@2"}
    assert swapped["lora"]["backward-flops"] > 0 and swapped["lora"]["head-only"] == 0
    assert swapped["hard-prompt"]["extra-inference-tokens"] > 0
    assert "primary metric macro-f1" in (run_dir / "table.md").read_text()
