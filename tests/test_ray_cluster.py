"""A run on an existing Ray cluster, on loopback: a Ray head and one worker node started as
separate local processes (``ray start --block``, one CPU each, their own temp dirs), a tiny
``run_simulation(..., ray_address=...)`` on them, and checks read from the cluster's own
tables (GCS): both nodes alive, one ClientApp actor on each node and ClientApp messages run on
both, the simulation runtime registered as a job; afterwards the actors are gone, the cluster
is still up, and once the test stops the processes it started (by PID) none survives."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from simulations.cli import prepare
from simulations.launcher import (
    add_ray_argument,
    check_ray_address,
    free_port,
    ray_node_env,
    run_simulation,
    stop_tree,
)
from simulations.report import read_rows
from tests.conftest import tiny_run_config


def _ray_cli() -> str | None:
    """The ``ray`` command of this virtual environment (the nodes must run this Python)."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.is_file() else shutil.which("ray")


# The cluster's own record, read straight from its GCS (no driver, no dashboard needed): its
# nodes, actors, jobs (drivers) and task events (which node ran which actor method).
CLUSTER_QUERY = r"""
import json, sys
from ray._private import services, state
gs = state.GlobalState()
gs._initialize_global_state(services._get_gcs_client_options(sys.argv[1]))
nodes = [{"id": n["NodeID"], "alive": bool(n["Alive"]),
          "cpus": (n.get("Resources") or {}).get("CPU", 0)} for n in gs.node_table()]
actors = [{"cls": a["ActorClassName"], "node": a["Address"]["NodeID"], "state": a["State"],
           "pid": a["Pid"]} for a in gs.actor_table(None).values()]
jobs = [{"entrypoint": j["Entrypoint"], "pid": j["DriverPid"], "dead": bool(j["IsDead"])}
        for j in gs.job_table()]
from ray.core.generated import gcs_pb2
tasks = []
for raw in gs._connect_and_get_accessor().get_task_events():
    event = gcs_pb2.TaskEvents.FromString(raw)
    tasks.append({"name": event.task_info.func_or_class_name,
                  "node": event.state_updates.node_id.hex(),
                  "pid": event.state_updates.worker_pid})
print(json.dumps({"nodes": nodes, "actors": actors, "jobs": jobs, "tasks": tasks}))
"""


def test_ray_address_argument_and_check():
    parser = argparse.ArgumentParser()
    add_ray_argument(parser)
    assert parser.parse_args([]).ray_address is None
    assert parser.parse_args(["--ray-address", "10.0.0.5:6379"]).ray_address == "10.0.0.5:6379"
    with pytest.raises(ConnectionError, match="no Ray cluster answers"):
        check_ray_address(f"127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ValueError, match="HOST:PORT"):
        check_ray_address("head-node")
    check_ray_address("auto")  # left to Ray
    check_ray_address("local")


def _cluster(address: str, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", CLUSTER_QUERY, address], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ray_start(ray: str, temp_dir: Path, extra: list[str], env: dict[str, str]
               ) -> subprocess.Popen:
    """``ray start --block``: the node's processes stay its descendants until it is stopped."""
    temp_dir.mkdir(parents=True)
    command = [ray, "start", "--block", "--num-cpus", "1", "--disable-usage-stats",
               "--temp-dir", str(temp_dir), "--object-store-memory", str(256 * 2**20),
               "--dashboard-agent-listen-port", str(free_port()), *extra]
    with (temp_dir.parent / f"{temp_dir.name}.log").open("w") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait_started(node: subprocess.Popen, temp_dir: Path, deadline: float) -> None:
    """``ray start`` writes ``ray_current_cluster`` into the node's temp dir once it is up."""
    while not (temp_dir / "ray_current_cluster").is_file():
        log = temp_dir.parent / f"{temp_dir.name}.log"
        assert node.poll() is None, f"ray start exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"ray node not up:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)


def _ours(root: Path) -> dict[int, str]:
    """pid -> command line of every process naming this test's Ray temp dirs."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(root) in cmdline:
                found[int(entry.name)] = cmdline
    return found


@pytest.mark.integration
def test_run_on_an_existing_ray_cluster(tmp_path):
    ray = _ray_cli()
    if ray is None:  # flwr[simulation] installs it; only a partial install lacks it
        pytest.skip("the `ray` command line (flwr[simulation]) is not installed")
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="swr", dir="/tmp"))  # short: Ray's socket paths
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = ray_node_env()
    nodes: list[subprocess.Popen] = []
    try:
        # Loopback. `ray start` replaces the literals 127.0.0.1 / localhost by the machine's
        # address, except with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which in turn makes
        # `ray start --address` refuse to start a worker node. So: the head with that variable
        # (GCS and raylet listen on 127.0.0.1 only); the worker without it, naming the same
        # loopback address in its IPv4-mapped IPv6 spelling, which Ray leaves alone.
        head_dir = root / "head"
        nodes.append(_ray_start(ray, head_dir, [
            "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
            "--include-dashboard=false", "--dashboard-port", str(free_port()),
            "--ray-client-server-port", str(free_port()),
        ], {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}))
        _wait_started(nodes[0], head_dir, time.monotonic() + 60)
        worker_dir = root / "worker"
        nodes.append(_ray_start(ray, worker_dir, [
            "--address", f"[::ffff:127.0.0.1]:{port}", "--node-ip-address", "::ffff:127.0.0.1",
        ], env))
        _wait_started(nodes[1], worker_dir, time.monotonic() + 60)
        deadline = time.monotonic() + 30
        while len([n for n in _cluster(address, env)["nodes"] if n["alive"]]) < 2:
            assert time.monotonic() < deadline, "the worker node never joined the head"
            time.sleep(0.5)
        before = _cluster(address, env)
        node_ids = {n["id"] for n in before["nodes"] if n["alive"]}
        assert len(node_ids) == 2 and not before["actors"] and not before["jobs"]

        config = tiny_run_config(tmp_path / "work", tmp_path / "out", users=2,
                                 schedule="glove", strategies="global fala")
        config = prepare(config)
        code = run_simulation(config, 2, cpus_per_node=1, timeout=240, ray_address=address)
        assert code == 0

        (run_dir,) = (tmp_path / "out").iterdir()
        rows = read_rows(run_dir)
        assert {(r["version"], r["user"], r["strategy"]) for r in rows} >= {
            ("glove@1", u, s) for u in ("user-000", "user-001") for s in ("global", "fala")}

        after = _cluster(address, env)
        # Flower sized its actor pool from this cluster (2 nodes x 1 CPU, 1 CPU per device):
        # one ClientApp actor on each node.
        actors = [a for a in after["actors"] if a["cls"] == "ClientAppActor"]
        assert sorted(a["node"] for a in actors) == sorted(node_ids), after
        # The simulation runtime was this cluster's driver (a job).
        assert [j for j in after["jobs"] if "flwr-simulation" in j["entrypoint"]], after["jobs"]
        # Both nodes ran ClientApps (``ClientAppActor.run``, at least one message each); the run
        # released the cluster (its job and actors ended with it) and did not stop it.
        deadline = time.monotonic() + 30
        while True:
            ran_on = {t["node"] for t in after["tasks"] if t["name"] == "ClientAppActor.run"}
            done = ran_on == node_ids and all(a["state"] == "DEAD" for a in actors) and all(
                j["dead"] for j in after["jobs"])
            if done:
                break
            assert time.monotonic() < deadline, f"ClientApps ran on {ran_on}: {after}"
            time.sleep(0.5)
            after = _cluster(address, env)
            actors = [a for a in after["actors"] if a["cls"] == "ClientAppActor"]
        assert {n["id"] for n in after["nodes"] if n["alive"]} == node_ids
        assert all(node.poll() is None for node in nodes)
    finally:
        for node in reversed(nodes):  # the worker, then the head: only what we started
            stop_tree(node, grace=10)
        deadline = time.monotonic() + 10
        while (leftovers := _ours(root)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in leftovers:  # named by this test's temp dir: started by this test
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(root, ignore_errors=True)
    assert not leftovers, f"Ray processes of this test survived: {leftovers}"
    print(f"ray cluster test: {time.monotonic() - started:.0f}s")
