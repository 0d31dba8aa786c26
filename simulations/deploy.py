"""A real multi-process deployment on this machine, without Docker: the same topology as
``docker-compose.yml``, as local processes on 127.0.0.1.

One SuperLink (TLS, SuperNode authentication, its state database on disk), the SuperExec that
runs the ServerApp, and one SuperNode per user device with its own SuperExec, Runtime API port,
private data folder, private state folder and release cache. Every process has its own log and
its PID (with its start time, so a reused PID is never mistaken for it) in ``deployment.json``;
``down`` stops exactly those processes and nothing else. Devices share no folder with each
other or with the server: releases travel inline in the messages (``release-transport =
"inline"``), private paths come from each SuperNode's ``--node-config``.

Layout of a deployment folder (default ``deploy/``, the folder docker-compose mounts too)::

    credentials/          CA, SuperLink certificate, SuperNode keys, SuperExec secrets
    server/data/public/   the public data (all the server may read)
    server/work/          release cache of the server; server/results/: the run's rows
    node-<i>/data/        device i's private partition (+ the public catalogue it reads)
    node-<i>/state/       device i's private store;  node-<i>/releases/: its release cache
    superlink/state.db    the SuperLink's state;  logs/<service>.log;  flwr-home/
    deployment.json       run config, ports, and every service's command, PID and start time
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from simulations.credentials import Credentials, generate_credentials
from simulations.launcher import (
    APP_DIR,
    flower_env,
    free_port,
    process_groups,
    stop_groups,
    write_run_config,
)
from tasks.base import PARTITION_MANIFEST, read_partition
from tasks.files import atomic_write
from tasks.registry import get_task

log = logging.getLogger(__name__)

STATE_FILE = "deployment.json"
CONNECTION = "swapfl-local"
"""The connection name ``flwr`` uses for this deployment (in ``<deploy>/flwr-home``)."""


class DeploymentError(RuntimeError):
    """The deployment cannot do what was asked; the message says why and what to do."""


# -- data: the data owner's split, one folder per device -----------------------------------------


def split_for_devices(prepared: Path, task_name: str, root: Path) -> list[str]:
    """Copy the prepared data into the server's public folder and one private folder per
    device (its own partition, the public catalogue and a partition manifest naming only its
    user); returns the users in device order. Nothing of one user reaches another's folder."""
    task = get_task(task_name)
    users = task.private_users(prepared)
    server = root / "server" / "data"
    shutil.rmtree(server, ignore_errors=True)
    shutil.copytree(prepared / "public", server / "public")
    manifest = read_partition(prepared)
    for index, user in enumerate(users, start=1):
        data = root / f"node-{index}" / "data"
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(prepared / "public", data / "public")
        own = task.user_folder(prepared, user)
        shutil.copytree(own, data / own.relative_to(prepared))
        atomic_write(data / PARTITION_MANIFEST, json.dumps({**manifest, "users": [user]},
                                                           indent=2))
    return users


def write_users_env(root: Path, users: list[str]) -> Path:
    """``SWAPFL_USER_<i>=<user id>`` per device, the variables docker-compose.yml reads (the
    data owner's file: it names private users, so it stays beside their data)."""
    path = root / "users.env"
    atomic_write(path, "".join(f"SWAPFL_USER_{i}={json.dumps(user)}\n"
                               for i, user in enumerate(users, start=1)))
    path.chmod(0o600)
    return path


# -- processes ----------------------------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot); None if it is gone or
    has exited (a zombie its parent has not reaped yet)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass
class Service:
    """One process of the deployment: its command, log, and identity while it runs."""

    name: str
    command: list[str]
    log: str
    pid: int | None = None
    started: int | None = None  # /proc start time: tells our process from a reused PID

    def alive(self) -> bool:
        return self.pid is not None and _start_time(self.pid) == self.started

    def start(self, env: dict[str, str]) -> None:
        if self.alive():
            return
        with open(self.log, "a") as handle:
            handle.write(f"\n--- {time.strftime('%H:%M:%S')} start: {' '.join(self.command)}\n")
            process = subprocess.Popen(self.command, env=env, stdout=handle,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.pid, self.started = process.pid, _start_time(process.pid)

    def stop(self, grace: float = 10.0) -> None:
        stop_services([self], grace)


def stop_services(services: list[Service], grace: float = 10.0) -> None:
    """SIGTERM the services and the process groups of their descendants together, wait up to
    ``grace`` seconds, then SIGKILL what is left; only PIDs that still belong to the processes
    the services started are signalled."""
    running = [service for service in services if service.alive()]
    groups = {group for service in running
              for group in (*process_groups(service.pid).values(), service.pid)}
    stop_groups(groups, lambda: any(s.alive() for s in running), grace)
    for service in services:
        service.pid = service.started = None


def _wait_for_port(port: int, service: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise DeploymentError(f"{service.name} exited while starting; see {service.log}:\n"
                                  + _tail(Path(service.log), 30))
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise DeploymentError(f"{service.name} did not open 127.0.0.1:{port} in {timeout:.0f}s; "
                          f"see {service.log}")


def _tail(path: Path, lines: int) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- the deployment -----------------------------------------------------------------------------


@dataclass
class Deployment:
    """The state of one local deployment, kept in ``<root>/deployment.json``."""

    root: Path
    run_config: dict[str, Any] = field(default_factory=dict)
    users: int = 0
    superlink_port: int = 0
    insecure: bool = False
    services: dict[str, Service] = field(default_factory=dict)

    # persistence

    @classmethod
    def load(cls, root: Path) -> Deployment:
        root = Path(root).resolve()
        path = root / STATE_FILE
        if not path.is_file():
            raise DeploymentError(f"{root} holds no deployment ({STATE_FILE} missing); start "
                                  "one with `swapfl deploy up`")
        state = json.loads(path.read_text())
        services = {name: Service(**svc) for name, svc in state.pop("services").items()}
        return cls(root=root, services=services, **{k: v for k, v in state.items()
                                                    if k != "root"})

    def save(self) -> None:
        state = {**asdict(self), "root": str(self.root)}
        atomic_write(self.root / STATE_FILE, json.dumps(state, indent=2, default=str))

    # paths and environment

    @property
    def credentials(self) -> Credentials:
        return generate_credentials(self.root / "credentials", self.users)

    @property
    def flwr_home(self) -> Path:
        return self.root / "flwr-home"

    def env(self) -> dict[str, str]:
        env = flower_env(self.flwr_home, self.superlink_port, self.superlink_port)
        env.pop("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", None)
        env.pop("FLWR_LOCAL_CONTROL_API_PORT", None)
        return env

    def _write_connection(self) -> None:
        """``[superlink.swapfl-local]`` for the flwr CLI (absolute certificate path)."""
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        security = ("insecure = true" if self.insecure else
                    f'root-certificates = "{self.credentials.ca_cert}"')
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.superlink_port}"\n{security}\n')

    # services

    def _service(self, name: str, command: list[str]) -> Service:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        known = self.services.get(name)
        if known is not None and known.alive():
            return known
        service = Service(name, command, str(logs / f"{name}.log"))
        self.services[name] = service
        return service

    def _tls(self, *flags: str) -> list[str]:
        return ["--insecure"] if self.insecure else list(flags)

    def superlink(self) -> Service:
        c = self.credentials
        (self.root / "superlink").mkdir(parents=True, exist_ok=True)
        command = ["flower-superlink", "--isolation", "process", "--host", "127.0.0.1",
                   "--port", str(self.superlink_port),
                   "--database", str(self.root / "superlink" / "state.db"),
                   "--disable-runtime-dependency-installation",
                   *self._tls("--ssl-ca-certfile", str(c.ca_cert), "--ssl-certfile",
                              str(c.superlink_cert), "--ssl-keyfile", str(c.superlink_key),
                              "--enable-supernode-auth", "--superexec-auth-secret-file",
                              str(c.superexec_secret))]
        return self._service("superlink", command)

    def server_superexec(self) -> Service:
        c = self.credentials
        command = ["flower-superexec", "--runtime-api-address",
                   f"127.0.0.1:{self.superlink_port}",
                   *self._tls("--root-certificates", str(c.ca_cert),
                              "--superexec-auth-secret-file", str(c.superexec_secret))]
        return self._service("superexec-server", command)

    def node_port(self, index: int) -> int:
        return self.superlink_port + index

    def node_config(self, index: int, user: str) -> str:
        node = self.root / f"node-{index}"
        return (f"user-id={json.dumps(user)} user-index={index - 1} "
                f"data-dir={json.dumps(str(node / 'data'))} "
                f"state-dir={json.dumps(str(node / 'state'))} "
                f"release-cache={json.dumps(str(node / 'releases'))}")

    def supernode_command(self, index: int, user: str, key: Path | None = None,
                          port: int | None = None) -> list[str]:
        """SuperNode ``index`` (from 1) of ``user``; ``key``/``port`` override its own."""
        c, node = self.credentials, self.credentials.supernodes[index - 1]
        return ["flower-supernode", "--superlink", f"127.0.0.1:{self.superlink_port}",
                "--isolation", "process", "--host", "127.0.0.1",
                "--port", str(port or self.node_port(index)),
                "--node-config", self.node_config(index, user),
                *self._tls("--root-certificates", str(c.ca_cert),
                           "--auth-supernode-private-key", str(key or node.auth_private_key),
                           "--ssl-certfile", str(node.runtime_cert), "--ssl-keyfile",
                           str(node.runtime_key), "--ssl-ca-certfile", str(c.ca_cert),
                           "--superexec-auth-secret-file", str(node.superexec_secret))]

    def supernode(self, index: int, user: str) -> Service:
        return self._service(f"supernode-{index}", self.supernode_command(index, user))

    def node_superexec(self, index: int) -> Service:
        c, node = self.credentials, self.credentials.supernodes[index - 1]
        command = ["flower-superexec", "--runtime-api-address",
                   f"127.0.0.1:{self.node_port(index)}",
                   *self._tls("--root-certificates", str(c.ca_cert),
                              "--superexec-auth-secret-file", str(node.superexec_secret))]
        return self._service(f"superexec-node-{index}", command)

    def device_users(self) -> list[str]:
        """The user of each device folder, in device order (from the devices' own data)."""
        users = []
        for index in range(1, self.users + 1):
            data = self.root / f"node-{index}" / "data"
            users.append(read_partition(data)["users"][0])
        return users

    def register(self, public_key: Path) -> subprocess.CompletedProcess:
        """``flwr supernode register`` a public key with the SuperLink."""
        return subprocess.run(["flwr", "supernode", "register", str(public_key), CONNECTION],
                              env=self.env(), capture_output=True, text=True, timeout=120)

    def start_device(self, index: int, user: str) -> None:
        env = self.env()
        self.supernode(index, user).start(env)
        self.node_superexec(index).start(env)
        _wait_for_port(self.node_port(index), self.services[f"supernode-{index}"], 60)

    def stop(self, names: list[str] | None = None) -> list[str]:
        """Stop the named services (default: all) by PID; returns those that were running."""
        chosen = [s for n, s in self.services.items() if names is None or n in names]
        stopped = [s.name for s in chosen if s.alive()]
        stop_services(chosen)
        self.save()
        return stopped


def _run_config_for(config: dict[str, Any], root: Path, users: int) -> dict[str, Any]:
    """The run as the ServerApp sees it: public data, its own work and results folders,
    releases inline, one user per device, every device sent its order at once (real devices
    work in parallel)."""
    return {**config, "users": users, "data-dir": str(root / "server" / "data"),
            "work-dir": str(root / "server" / "work"),
            "out-dir": str(root / "server" / "results"), "release-transport": "inline",
            "send-window": 0}


def deploy_up(root: Path, config: dict[str, Any], prepared: Path, insecure: bool = False,
              timeout: float = 120.0) -> Deployment:
    """Split the prepared data per device, write credentials, start every process, register
    the SuperNodes' keys; returns the running deployment."""
    root = Path(root).resolve()
    if (root / STATE_FILE).is_file():
        running = Deployment.load(root)
        alive = [n for n, s in running.services.items() if s.alive()]
        if alive:
            raise DeploymentError(f"{root} already runs {', '.join(alive)}; "
                                  "`swapfl deploy down` first (or use another --dir)")
    root.mkdir(parents=True, exist_ok=True)
    users = split_for_devices(prepared, str(config["task"]), root)
    write_users_env(root, users)
    deployment = Deployment(root=root, users=len(users), superlink_port=free_port(),
                            insecure=insecure,
                            run_config=_run_config_for(config, root, len(users)))
    while any(_port_busy(deployment.node_port(i)) for i in range(1, len(users) + 1)):
        deployment.superlink_port = free_port()
    deployment.credentials  # noqa: B018 - writes what is missing
    deployment._write_connection()
    env = deployment.env()
    try:
        link = deployment.superlink()
        link.start(env)
        deployment.save()
        _wait_for_port(deployment.superlink_port, link, timeout)
        deployment.server_superexec().start(env)
        deployment.save()
        for index, user in enumerate(users, start=1):
            if not insecure:
                _register(deployment, deployment.credentials.supernodes[index - 1]
                          .auth_public_key, timeout)
            deployment.start_device(index, user)
            deployment.save()
            log.info("device %d of %d: SuperNode on 127.0.0.1:%d", index, len(users),
                     deployment.node_port(index))
    except BaseException:
        deployment.stop()
        raise
    return deployment


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _register(deployment: Deployment, public_key: Path, timeout: float) -> None:
    """Register a key, retrying while the SuperLink's Control API comes up."""
    deadline = time.monotonic() + timeout
    while True:
        done = deployment.register(public_key)
        if done.returncode == 0 or "already in use" in done.stdout + done.stderr:
            return
        if time.monotonic() > deadline:
            raise DeploymentError(f"could not register {public_key.name}:\n"
                                  f"{(done.stdout + done.stderr)[-2000:]}")
        time.sleep(1.0)


def deploy_run(deployment: Deployment, overrides: dict[str, Any] | None = None,
               timeout: float | None = None, app_dir: Path = APP_DIR) -> tuple[int, Path | None]:
    """``flwr run`` the app on the deployment; returns flwr's exit code and the run's folder."""
    dead = [n for n, s in deployment.services.items() if not s.alive()]
    if dead:
        raise DeploymentError(f"not running: {', '.join(dead)}; see `swapfl deploy status` "
                              "and `swapfl deploy logs NAME`")
    config = {**deployment.run_config, **(overrides or {})}
    out_dir = Path(config["out-dir"])
    before = set(out_dir.glob("*/rows.jsonl")) if out_dir.is_dir() else set()
    run_config = write_run_config(deployment.root / "run-config.toml", config)
    command = ["flwr", "run", str(app_dir), CONNECTION, "--stream", "--run-config",
               str(run_config)]
    code = subprocess.run(command, env=deployment.env(), timeout=timeout).returncode
    after = set(out_dir.glob("*/rows.jsonl")) if out_dir.is_dir() else set()
    new = sorted(after - before, key=lambda p: p.stat().st_mtime)
    return code, (new[-1].parent if new else None)


def deploy_status(deployment: Deployment) -> list[dict[str, Any]]:
    return [{"service": name, "running": svc.alive(), "pid": svc.pid, "log": svc.log}
            for name, svc in deployment.services.items()]
