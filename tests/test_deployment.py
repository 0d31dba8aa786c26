"""The deployment as real Flower processes on 127.0.0.1: a SuperLink with TLS and SuperNode
authentication, a SuperExec for the ServerApp, and two SuperNodes with their SuperExecs, each
device with its own data, state and release cache. Releases go inline. Every process the tests
start is stopped by PID, and none outlives them."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.store import PrivateStore
from simulations.deploy import Deployment, Service, deploy_run, deploy_up
from tests.conftest import tiny_run_config

pytestmark = pytest.mark.integration

STRATEGIES = ("global", "fala")


def _processes_on(ports: list[int]) -> list[str]:
    """Flower processes whose command line names one of the deployment's ports (what the
    deployment started: SuperLink, SuperNodes, SuperExecs and the apps they launched)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines()
            if ("flower-" in line or "flwr-" in line)
            and any(f"127.0.0.1:{port}" in line or f"--port {port}" in line for port in ports)]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, tiny_bert_dir):
    """Two devices, secure by default, from the same prepared data a simulation would use."""
    from simulations.cli import prepare

    root = tmp_path_factory.mktemp("deploy")
    config = prepare(tiny_run_config(root / "work", root / "results", users=2,
                                     schedule=f"glove tinybert={tiny_bert_dir}",
                                     strategies=" ".join(STRATEGIES),
                                     **{"node-wait-seconds": 30,
                                        "reply-timeout-seconds": 120}))
    running = deploy_up(root / "deploy", config, Path(config["data-dir"]))
    try:
        yield running
    finally:
        running = Deployment.load(running.root)
        running.stop()
        assert not any(s.alive() for s in running.services.values())
        ports = [running.superlink_port, *(running.node_port(i) for i in (1, 2))]
        assert not _processes_on(ports), "a Flower process outlived the deployment"


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]


def _store_checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_secure_topology_runs_personalization_and_a_swap_with_inline_weights(deployment):
    commands = {name: " ".join(s.command) for name, s in deployment.services.items()}
    assert "--enable-supernode-auth" in commands["superlink"]
    assert "--ssl-certfile" in commands["superlink"] and "--insecure" not in commands.values()
    for index in (1, 2):
        assert "--auth-supernode-private-key" in commands[f"supernode-{index}"]
        assert "--root-certificates" in commands[f"supernode-{index}"]
    code, run_dir = deploy_run(deployment, timeout=600)
    assert code == 0 and run_dir is not None
    status = json.loads((run_dir / "status.json").read_text())
    assert status == {"complete": True, "rows": status["rows"], "failures": 0}
    rows = _rows(run_dir)
    keys = {(r["version"], r["user"], r["strategy"]) for r in rows}
    expected = {(v, u, s) for v in ("glove@1", "tinybert@2") for u in ("user-000", "user-001")
                for s in STRATEGIES}
    assert expected <= keys and len(keys) == len(rows)
    for row in rows:
        assert 0 <= row["auc"] <= 1 and row["downlink-bytes"] > 1e6  # the weights themselves
    # each device installed both releases in its own cache, verified, from the messages
    for index in (1, 2):
        cache = deployment.root / f"node-{index}" / "releases"
        assert len([p for p in cache.iterdir() if (p / "manifest.json").is_file()]) == 2
    # a second run: every device holds the release already, so no weights are sent again
    code, again = deploy_run(deployment, {"schedule": "glove"}, timeout=600)
    assert code == 0
    assert {r["downlink-bytes"] for r in _rows(again)} == {0.0}


def test_a_supernode_with_an_unregistered_key_is_refused(deployment, tmp_path):
    from simulations.credentials import generate_credentials
    from simulations.launcher import free_port

    stranger = generate_credentials(tmp_path / "stranger", 1).supernodes[0]
    user = deployment.device_users()[0]
    intruder = Service("intruder", deployment.supernode_command(
        1, user, key=stranger.auth_private_key, port=free_port()), str(tmp_path / "intruder.log"))
    intruder.start(deployment.env())
    deadline = time.monotonic() + 60
    while intruder.alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    refused = not intruder.alive()
    intruder.stop()
    log = Path(intruder.log).read_text()
    assert refused, f"an unregistered SuperNode kept running:\n{log[-2000:]}"
    assert "Failed to activate SuperNode" in log, log[-2000:]


def test_a_supernode_killed_between_swaps_keeps_its_state_and_the_run_completes(deployment,
                                                                               tmp_path):
    """Device 1 is stopped right after the first personalization and restarted once the
    server has dealt with the swap (sent it to device 1 or recorded it as missed): its store
    is byte-identical across the restart, the run completes, and device 1 catches up at the
    next version from the last version it completed."""
    schedule = deployment.run_config["schedule"] + " roberta"
    out = tmp_path / "results"
    command = [sys.executable, "-m", "simulations.cli", "deploy", "run", "--dir",
               str(deployment.root), "--timeout", "600", "--set", f"schedule={schedule}",
               "--set", f"out-dir={out}"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        run_dir = _wait_for(lambda: next(iter(out.glob("*/rows.jsonl")), None), 300).parent
        _wait_for(lambda: sum(r["version"] == "glove@1" for r in _rows(run_dir)) == 2 * 3, 300)
        deployment.stop(["supernode-1", "superexec-node-1"])
        state = deployment.root / "node-1" / "state"
        before = _store_checksums(state)

        def swap_settled() -> bool:
            failures = run_dir / "failures.jsonl"
            missed = failures.is_file() and "tinybert@2" in failures.read_text()
            done = any(r["version"] == "tinybert@2" and r["user"] == "user-000"
                       for r in _rows(run_dir))
            return missed or done

        _wait_for(swap_settled, 300)
        assert _store_checksums(state) == before  # nothing touched it while it was down
        deployment.start_device(1, deployment.device_users()[0])
        deployment.save()
        output, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output[-4000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["complete"] is True
    rows = _rows(run_dir)
    failures = [json.loads(line) for line in (run_dir / "failures.jsonl").read_text()
                .splitlines()] if (run_dir / "failures.jsonl").is_file() else []
    versions = ("glove@1", "tinybert@2", "roberta@3")
    for version in versions:
        assert {("user-001", s) for s in STRATEGIES} <= {
            (r["user"], r["strategy"]) for r in rows if r["version"] == version}
    # device 1 has each version exactly once: a row or a recorded miss, never both
    device_1 = {r["version"] for r in rows if r["user"] == "user-000"}
    missed = {f["version"] for f in failures}
    assert device_1 | missed == set(versions) and not device_1 & missed
    assert {"glove@1", "roberta@3"} <= device_1  # caught up after the restart
    for seed_dir in state.glob("*/*/seed-*"):  # its store still verifies, key by key
        store = PrivateStore(seed_dir)
        for track in STRATEGIES:
            store.load(f"tracks/{track}")


def _wait_for(condition, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (FileNotFoundError, json.JSONDecodeError):
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"condition not met within {timeout:.0f}s")
