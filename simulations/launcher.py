"""Run the Flower app as a local simulation and leave nothing running afterwards.

``flwr run . local`` starts a SuperLink that outlives the run. We start that SuperLink
ourselves (same command Flower uses, on free loopback ports, in its own process group), let
``flwr run`` find it, and stop the whole group — SuperLink, simulation runtime, Ray — at the
end, by PID.

With ``ray_address`` the simulation runtime joins an existing Ray cluster instead of starting
its own (docs/ray-cluster.md). Flower 1.41 has no federation-config key for a Ray address: its
Ray backend calls ``ray.init()`` without ``address`` and passes only ``num-cpus``,
``num-gpus``, ``logging-level`` and ``log-to-driver`` from ``init-args``
(``flwr/simulation/app.py``, ``flwr/server/superlink/fleet/vce/backend/raybackend.py``), so
``ray.init()`` resolves the cluster itself: ``RAY_ADDRESS`` first, which we set for the
SuperLink and everything it starts. The cluster is the user's: we never stop it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from argparse import ArgumentParser
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).resolve().parents[1]
"""The Flower app: the folder holding pyproject.toml with [tool.flwr.app]."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


DEVICE_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # numpy's OpenBLAS spun forever on a small matvec inside the simulation runtime with
    # its default thread pool; torch sets its own thread count explicitly.
    "OPENBLAS_NUM_THREADS": "1",
}
"""Environment of every process that runs ClientApps. Ray workers inherit the environment of
the ``ray start`` that started their node, so on an existing cluster each node must be
started with these (``ray_node_env``)."""


def flower_env(flwr_home: Path, http_port: int, control_port: int) -> dict[str, str]:
    """Environment Flower needs on these machines (offline, no runtime installs)."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        **DEVICE_ENV,
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http_port),
        FLWR_LOCAL_CONTROL_API_PORT=str(control_port),
        PATH=bin_dir + os.pathsep + env.get("PATH", ""),
    )
    return env


def ray_node_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ``ray start`` on a node of an existing cluster: ``DEVICE_ENV`` and the
    virtual environment's ``bin/`` first on ``PATH``. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
    is removed: it makes ``ray start --address`` refuse to start a worker node."""
    env = dict(os.environ if base is None else base)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    env.update(DEVICE_ENV)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def add_ray_argument(parser: ArgumentParser) -> None:
    """``--ray-address`` for a command that runs a simulation."""
    parser.add_argument(
        "--ray-address", default=None, metavar="ADDRESS",
        help="run the virtual devices on an existing Ray cluster: HEAD_IP:PORT, or 'auto' "
        "for the cluster `ray start` last started on this machine ('local': a private "
        "instance even then); this machine must be one of its nodes, and every node needs "
        "this install and the work-dir at the same path (docs/ray-cluster.md). Default: "
        "Ray's own choice, a private local instance unless RAY_ADDRESS is set or `ray start` "
        "ran on this machine")


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with a clear message, when nothing listens at ``HOST:PORT`` (Ray's
    own connection attempts keep retrying first). ``auto`` (the cluster ``ray start``
    last started on this machine), ``local`` (a private instance even if such a cluster
    runs) and ``ray://`` addresses are left to Ray."""
    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r}: expected HOST:PORT, 'auto', 'local' or "
                         "ray://...")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise ConnectionError(
            f"no Ray cluster answers at {address} ({err}); start its head with `ray start "
            f"--head --port {port}` (docs/ray-cluster.md)") from err


def virtual_nodes(config: dict[str, Any]) -> int:
    """Flower virtual nodes a simulation of this run config needs: ``users`` devices,
    ``devices-per-node`` of them on each node."""
    users, per_node = int(config["users"]), int(config.get("devices-per-node", 1))
    return -(-users // per_node)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a valid TOML basic string (newlines too)


def write_run_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text("".join(f"{key} = {_toml_value(v)}\n" for key, v in config.items()))
    return path


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process (Linux /proc)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            table[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return table


def process_tree(pid: int) -> set[int]:
    """``pid`` and all its descendants, as they are now."""
    parents = _parents()
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in family:
                family.add(child)
                frontier.append(child)
    return family


def process_groups(pid: int) -> dict[int, int]:
    """Process group of each descendant of ``pid`` (and of ``pid``): Flower's SuperExec and
    the simulation runtime start their own sessions, so one ``killpg`` is not enough."""
    groups = {}
    for member in process_tree(pid):
        try:
            groups[member] = os.getpgid(member)
        except ProcessLookupError:
            continue
    return groups


def stop_tree(process: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop ``process`` and all its descendants' process groups: SIGTERM, then SIGKILL."""
    groups = set(process_groups(process.pid).values()) | {process.pid}
    stop_groups(groups, lambda: process.poll() is None, grace)


def stop_groups(groups: set[int], running: Callable[[], bool], grace: float = 15.0) -> None:
    """SIGTERM every process group, wait up to ``grace`` seconds for them (and for
    ``running()`` to turn false), then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for group in groups:
            try:
                os.killpg(group, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not running() and not any(group_alive(g) for g in groups):
                return
            time.sleep(0.2)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``kill``, a scheduler stopping the job) like Ctrl-C while the block runs,
    so the SuperLink and everything it started are stopped on the way out instead of being
    orphaned; the run can then be continued with ``swapfl run --resume``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_simulation(run_config: dict[str, Any], num_supernodes: int, cpus_per_node: float = 1.0,
                   app_dir: Path = APP_DIR, flwr_home: Path | None = None,
                   timeout: float | None = None, ray_address: str | None = None) -> int:
    """``flwr run`` the app with ``run_config`` overrides; returns flwr's exit code.

    ``ray_address``: join that existing Ray cluster (``HOST:PORT`` of its head, or ``auto``)
    instead of starting a private Ray instance (``local`` forces one); run this on one of the
    cluster's nodes. The cluster is left running."""
    if ray_address:
        check_ray_address(ray_address)
    with terminate_as_interrupt(), tempfile.TemporaryDirectory(prefix="swapfl-flwr-") as tmp:
        home = Path(flwr_home) if flwr_home else Path(tmp) / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        http_port, control_port = free_port(), free_port()
        env = flower_env(home, http_port, control_port)
        if ray_address:
            # Read by ray.init() in Flower's Ray backend (the simulation process inherits the
            # SuperLink's environment); Flower's federation config cannot carry an address.
            env["RAY_ADDRESS"] = ray_address
            log.info("Ray address %s (RAY_ADDRESS of the simulation runtime)", ray_address)
        logs = home / "superlink.log"
        superlink = subprocess.Popen(
            ["flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess",
             "--control-api-address", f"127.0.0.1:{control_port}", "--host", "127.0.0.1",
             "--port", str(http_port), "--database", str(home / "state.db")],
            env=env, stdout=logs.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.info("SuperLink pid %d on 127.0.0.1:%d (log %s)", superlink.pid, http_port, logs)
        try:
            deadline = time.monotonic() + 60
            while not _healthy(http_port):
                if superlink.poll() is not None:
                    raise RuntimeError(f"flower-superlink exited early; see {logs}:\n"
                                       + logs.read_text()[-2000:])
                if time.monotonic() > deadline:
                    raise TimeoutError(f"flower-superlink not healthy in 60s; see {logs}")
                time.sleep(0.3)
            overrides = write_run_config(Path(tmp) / "run-config.toml", run_config)
            command = [
                "flwr", "run", str(app_dir), "local", "--stream",
                "--run-config", str(overrides),
                "--federation-config",
                f"num-supernodes={num_supernodes} client-resources-num-cpus={cpus_per_node:g}",
            ]
            return subprocess.run(command, env=env, timeout=timeout).returncode
        finally:
            stop_tree(superlink)
            log.info("SuperLink process group %d stopped", superlink.pid)
