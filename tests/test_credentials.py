"""Deployment credentials: the chain verifies in a real TLS handshake, Flower 1.41 loads every
file with its own loaders, and generating again keeps what exists (only new SuperNodes are added).

A wrong key format or a missing subjectAltName only shows up as a failed start inside a
container; these tests catch it on the developer's machine in well under a second per case."""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import ssl
import stat

import pytest
from cryptography import x509

from simulations.credentials import (
    DEFAULT_HOSTS,
    certificate_hosts,
    credential_paths,
    generate_credentials,
    main,
)


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    return generate_credentials(tmp_path_factory.mktemp("credentials"), supernodes=2)


def _mtimes(folder):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def _handshake(server_cert, server_key, ca_cert, server_name, strict=True) -> None:
    """A full TLS handshake in memory, verifying ``server_name`` the way HTTPS clients do."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_cert, server_key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname check + verification on
    client_ctx.load_verify_locations(cafile=ca_cert)
    if strict:  # Python >= 3.13 verifies this strictly by default
        client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    bios = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx.wrap_bio(bios[0], bios[1], server_side=True)
    client = client_ctx.wrap_bio(bios[2], bios[3], server_hostname=server_name)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        bios[0].write(bios[3].read())  # client -> server
        bios[2].write(bios[1].read())  # server -> client
        if all(done.values()):
            return
    raise AssertionError("TLS handshake did not complete")


def test_files_and_modes(creds):
    assert (creds.out_dir / ".gitignore").read_text().splitlines()[-1] == "*"
    names = sorted(p.name for p in creds.out_dir.iterdir() if p.name != ".gitignore")
    expected = ["ca.crt", "ca.key", "superlink-superexec.secret", "superlink.crt",
                "superlink.key"]
    for i in (1, 2):
        expected += [f"supernode-{i}-runtime.crt", f"supernode-{i}-runtime.key",
                     f"supernode-{i}-superexec.secret", f"supernode-{i}.key",
                     f"supernode-{i}.pub"]
    assert names == sorted(expected)
    assert sorted(p.name for p in creds.created) == sorted(expected)
    for path in creds.created:
        mode = stat.S_IMODE(path.stat().st_mode)
        private = path.suffix in (".key", ".secret")
        assert mode == (0o600 if private else 0o644), (path.name, oct(mode))


def test_superlink_certificate_chains_to_the_ca(creds):
    ca = x509.load_pem_x509_certificate(creds.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(creds.superlink_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert ca.not_valid_before_utc <= now < ca.not_valid_after_utc
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = certificate_hosts(cert)
    assert x509.DNSName("localhost") in sans and x509.DNSName("superlink") in sans
    assert x509.IPAddress(ipaddress.ip_address("127.0.0.1")) in sans  # IP SAN, not DNS


@pytest.mark.parametrize("host", DEFAULT_HOSTS)
def test_tls_handshake_for_every_default_host(creds, host):
    _handshake(creds.superlink_cert, creds.superlink_key, creds.ca_cert, host)


def test_tls_handshake_rejects_an_unlisted_host(creds):
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(creds.superlink_cert, creds.superlink_key, creds.ca_cert, "elsewhere")


@pytest.mark.parametrize("index", [1, 2])
def test_supernode_runtime_api_certificate(creds, index):
    node = creds.supernodes[index - 1]
    assert node.index == index
    for host in (f"supernode-{index}", "localhost", "127.0.0.1"):
        _handshake(node.runtime_cert, node.runtime_key, creds.ca_cert, host)
    with pytest.raises(ssl.SSLCertVerificationError):
        other = 3 - index
        _handshake(node.runtime_cert, node.runtime_key, creds.ca_cert, f"supernode-{other}")


def test_flower_loads_the_server_certificates(creds):
    from flwr.common.args import try_obtain_server_certificates

    ca, cert, key = try_obtain_server_certificates(argparse.Namespace(
        ssl_ca_certfile=str(creds.ca_cert), ssl_certfile=str(creds.superlink_cert),
        ssl_keyfile=str(creds.superlink_key)))
    assert ca.startswith(b"-----BEGIN CERTIFICATE") and b"PRIVATE KEY" in key and cert


def test_flower_loads_the_supernode_keys_and_register_accepts_the_public_key(creds):
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes
    from flwr.supernode.cli.flower_supernode import _try_setup_client_authentication

    registered = set()
    for node in creds.supernodes:
        # exactly what `flower-supernode --auth-supernode-private-key` does
        private, public = _try_setup_client_authentication(argparse.Namespace(
            auth_supernode_private_key=str(node.auth_private_key),
            auth_supernode_public_key=None))
        # exactly what `flwr supernode register <public-key>` sends to the SuperLink
        sent = try_load_public_key(node.auth_public_key)
        assert sent == public_key_to_bytes(public) == public_key_to_bytes(private.public_key())
        registered.add(sent)
    assert len(registered) == 2  # every node its own identity


def test_flower_loads_the_superexec_secrets(creds):
    from flwr.supercore.auth import load_superexec_auth_secret

    secrets = [load_superexec_auth_secret(str(creds.superexec_secret))]
    secrets += [load_superexec_auth_secret(str(n.superexec_secret)) for n in creds.supernodes]
    assert all(len(s) == 64 and s.isascii() and not s.endswith(b"\n") for s in secrets)
    assert len(set(secrets)) == 3  # one per Runtime API, shared with nobody else


def test_second_call_keeps_everything(tmp_path):
    generate_credentials(tmp_path, supernodes=2)
    before = _mtimes(tmp_path)
    again = generate_credentials(tmp_path, supernodes=2)
    assert again.created == ()
    assert _mtimes(tmp_path) == before


def test_more_supernodes_only_adds_the_new_ones(tmp_path):
    generate_credentials(tmp_path, supernodes=2)
    before = _mtimes(tmp_path)
    grown = generate_credentials(tmp_path, supernodes=3)
    assert sorted(p.name for p in grown.created) == [
        "supernode-3-runtime.crt", "supernode-3-runtime.key", "supernode-3-superexec.secret",
        "supernode-3.key", "supernode-3.pub"]
    after = _mtimes(tmp_path)
    assert {name: after[name] for name in before} == before
    _handshake(grown.supernodes[2].runtime_cert, grown.supernodes[2].runtime_key,
               grown.ca_cert, "supernode-3")


def test_overwrite_replaces_the_ca_and_keys(tmp_path):
    first = generate_credentials(tmp_path, supernodes=1)
    ca_before = first.ca_cert.read_bytes()
    key_before = first.supernodes[0].auth_private_key.read_bytes()
    second = generate_credentials(tmp_path, supernodes=1, overwrite=True)
    assert len(second.created) == len(first.created)
    assert second.ca_cert.read_bytes() != ca_before
    assert second.supernodes[0].auth_private_key.read_bytes() != key_before
    _handshake(second.superlink_cert, second.superlink_key, second.ca_cert, "superlink")


def test_new_host_reissues_only_the_superlink_certificate(tmp_path):
    generate_credentials(tmp_path, supernodes=1)
    before = _mtimes(tmp_path)
    creds = generate_credentials(tmp_path, supernodes=1, hosts=(*DEFAULT_HOSTS, "10.0.0.7"))
    assert sorted(p.name for p in creds.created) == ["superlink.crt", "superlink.key"]
    assert {k: v for k, v in _mtimes(tmp_path).items() if not k.startswith("superlink.")} == {
        k: v for k, v in before.items() if not k.startswith("superlink.")}
    _handshake(creds.superlink_cert, creds.superlink_key, creds.ca_cert, "10.0.0.7")


def test_a_new_ca_reissues_the_server_certificates_but_keeps_node_identities(tmp_path):
    first = generate_credentials(tmp_path, supernodes=1)
    node_key = first.supernodes[0].auth_private_key.read_bytes()
    first.ca_cert.unlink()
    first.ca_key.unlink()
    second = generate_credentials(tmp_path, supernodes=1)
    assert second.supernodes[0].auth_private_key.read_bytes() == node_key
    assert {second.superlink_cert, second.supernodes[0].runtime_cert} <= set(second.created)
    _handshake(second.superlink_cert, second.superlink_key, second.ca_cert, "localhost")


def test_a_lost_public_key_is_derived_again(tmp_path):
    creds = generate_credentials(tmp_path, supernodes=1)
    pub = creds.supernodes[0].auth_public_key
    original = pub.read_bytes()
    pub.unlink()
    again = generate_credentials(tmp_path, supernodes=1)
    assert again.created == (pub,) and pub.read_bytes() == original


def test_a_lost_private_key_is_an_error_not_a_silent_new_identity(tmp_path):
    creds = generate_credentials(tmp_path, supernodes=1)
    creds.supernodes[0].auth_private_key.unlink()
    with pytest.raises(FileNotFoundError, match="supernode-1.pub exists"):
        generate_credentials(tmp_path, supernodes=1)


def test_modes_do_not_depend_on_the_umask(tmp_path):
    previous = os.umask(0)
    try:
        creds = generate_credentials(tmp_path, supernodes=1)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(creds.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds.supernodes[0].superexec_secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds.ca_cert.stat().st_mode) == 0o644


def test_paths_without_writing(tmp_path):
    paths = credential_paths(tmp_path / "none", supernodes=2)
    assert paths.supernodes[1].auth_public_key.name == "supernode-2.pub"
    assert not (tmp_path / "none").exists()


def test_command_line(tmp_path, capsys):
    out = tmp_path / "creds"
    assert main(["--out", str(out), "--supernodes", "1", "--host", "superlink",
                 "--host", "192.168.1.5"]) == 0
    cert = x509.load_pem_x509_certificate((out / "superlink.crt").read_bytes())
    assert certificate_hosts(cert) == [
        x509.DNSName("superlink"), x509.IPAddress(ipaddress.ip_address("192.168.1.5"))]
    assert (out / "supernode-1.pub").is_file()
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--supernodes", "-1"])
