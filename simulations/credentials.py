"""Credentials for a secure Flower deployment of swapfl: TLS, SuperNode keys, SuperExec secrets.

Why this exists: a deployment that is secure by default needs a set of files that fit together,
and getting one wrong only shows up as a handshake error inside a container. One call writes all
of them into one folder, in the formats Flower 1.41 loads:

================================  ==========================================================
``ca.crt`` / ``ca.key``           self-signed CA; ``ca.crt`` is the ``--root-certificates`` of
                                  SuperNodes, SuperExecs and the ``flwr`` CLI connection
``superlink.crt`` / ``.key``      SuperLink TLS (``--ssl-certfile/--ssl-keyfile``); one HTTPS
                                  port serves the Fleet, Control and Runtime APIs, so its
                                  subjectAltNames must name every address clients dial
``superlink-superexec.secret``    ``--superexec-auth-secret-file`` of the SuperLink and of its
                                  SuperExec: the Runtime API shares the SuperLink's public
                                  port, and without the secret anyone reaching that port could
                                  acquire the ServerApp's task
``supernode-<i>.key``             SuperNode authentication key (``--auth-supernode-private-
                                  key``): EC P-384 in OpenSSH private-key format, the only
                                  format ``flower-supernode`` loads (``load_ssh_private_key``)
``supernode-<i>.pub``             its public key in OpenSSH format, for
                                  ``flwr supernode register`` (any NIST curve)
``supernode-<i>-runtime.crt/.key``  TLS of the node's own Runtime API, which its SuperExec and
                                  ClientApp processes dial (SAN ``supernode-<i>``, localhost)
``supernode-<i>-superexec.secret``  the node's ``--superexec-auth-secret-file`` (node + its
                                  SuperExec)
================================  ==========================================================

Nodes are numbered from 1, like the compose services ``supernode-1``, ``supernode-2``. The
folder gets a ``.gitignore`` of ``*`` so that no key is ever committed by accident.

Idempotent: the CA and the SuperNode keys are identities that others trust or have registered,
so existing ones are never replaced unless ``overwrite``; asking for more SuperNodes only adds the
new ones. Server certificates are re-issued from the same CA (clients keep trusting them) only
when they no longer chain to the CA, miss a requested host or have expired. Private keys and
secrets are created with mode 0600 from the first byte; certificates and public keys are 0644.

This module imports nothing heavier than ``cryptography``, so the host that generates the
credentials needs neither torch nor Flower.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "superlink")
# P-384 as in Flower's own examples; `flwr supernode register` accepts any NIST curve.
SUPERNODE_CURVE = ec.SECP384R1()
# TLS keys: P-256 is fast to generate and accepted by every TLS stack involved.
TLS_CURVE = ec.SECP256R1()
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
CLOCK_SKEW = dt.timedelta(minutes=5)  # containers and hosts whose clocks differ slightly


@dataclass(frozen=True)
class SuperNodeCredentials:
    """The files of SuperNode ``index`` (numbered from 1)."""

    index: int
    auth_private_key: Path  # supernode-<i>.key: --auth-supernode-private-key
    auth_public_key: Path  # supernode-<i>.pub: flwr supernode register
    runtime_cert: Path  # supernode-<i>-runtime.crt: --ssl-certfile of the node's Runtime API
    runtime_key: Path  # supernode-<i>-runtime.key: --ssl-keyfile
    superexec_secret: Path  # supernode-<i>-superexec.secret: node and its SuperExec

    @property
    def runtime_hosts(self) -> tuple[str, ...]:
        return runtime_hosts(self.index)


@dataclass(frozen=True)
class Credentials:
    """Paths of everything a secure deployment needs; ``created`` lists what this call wrote."""

    out_dir: Path
    ca_cert: Path
    ca_key: Path
    superlink_cert: Path
    superlink_key: Path
    superexec_secret: Path  # shared by the SuperLink and the ServerApp's SuperExec
    supernodes: tuple[SuperNodeCredentials, ...]
    created: tuple[Path, ...] = ()


def runtime_hosts(index: int) -> tuple[str, ...]:
    """Names SuperExec may dial to reach SuperNode ``index``'s Runtime API."""
    return (f"supernode-{index}", "localhost", "127.0.0.1")


def supernode_paths(out_dir: Path, index: int) -> SuperNodeCredentials:
    """Where SuperNode ``index``'s files are (or go)."""
    def path(suffix: str) -> Path:
        return Path(out_dir) / f"supernode-{index}{suffix}"

    return SuperNodeCredentials(
        index=index, auth_private_key=path(".key"), auth_public_key=path(".pub"),
        runtime_cert=path("-runtime.crt"), runtime_key=path("-runtime.key"),
        superexec_secret=path("-superexec.secret"),
    )


def credential_paths(out_dir: Path, supernodes: int) -> Credentials:
    """Where ``generate_credentials`` puts (or finds) each file; writes nothing."""
    out_dir = Path(out_dir)
    return Credentials(
        out_dir=out_dir,
        ca_cert=out_dir / "ca.crt",
        ca_key=out_dir / "ca.key",
        superlink_cert=out_dir / "superlink.crt",
        superlink_key=out_dir / "superlink.key",
        superexec_secret=out_dir / "superlink-superexec.secret",
        supernodes=tuple(supernode_paths(out_dir, i) for i in range(1, supernodes + 1)),
    )


def generate_credentials(
    out_dir: Path,
    supernodes: int,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = 365,
    overwrite: bool = False,
) -> Credentials:
    """Create (or complete) the credentials of a SuperLink and ``supernodes`` SuperNodes.

    ``hosts`` are the SuperLink certificate's subjectAltNames: every name or IP address that
    SuperNodes, SuperExecs and the ``flwr`` CLI use to reach it (IP addresses become IP SANs,
    as hostname checking requires). Existing files are kept unless ``overwrite``.
    """
    if supernodes < 0:
        raise ValueError(f"supernodes must be >= 0, got {supernodes}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    hosts = tuple(dict.fromkeys(h.strip() for h in hosts if h.strip()))
    if not hosts:
        raise ValueError("hosts is empty: the SuperLink certificate needs at least one name")
    paths = credential_paths(out_dir, supernodes)
    paths.out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ignore = paths.out_dir / ".gitignore"
    if not ignore.exists():  # keys must never reach a repository
        ignore.write_text("# generated credentials (private keys): never commit them\n*\n")
    writer = _Writer(overwrite)

    ca_key, ca_cert, ca_is_new = _ensure_ca(paths, days, writer)
    _ensure_server_cert(paths.superlink_cert, paths.superlink_key, "superlink", hosts,
                        ca_key, ca_cert, days, writer, reissue=ca_is_new)
    _ensure_secret(paths.superexec_secret, writer)
    for node in paths.supernodes:
        _ensure_supernode_key(node, writer)
        _ensure_server_cert(node.runtime_cert, node.runtime_key, f"supernode-{node.index}",
                            node.runtime_hosts, ca_key, ca_cert, days, writer,
                            reissue=ca_is_new)
        _ensure_secret(node.superexec_secret, writer)
    return replace(paths, created=tuple(writer.created))


class _Writer:
    """Writes each file once per call, atomically, with its final mode from creation on."""

    def __init__(self, overwrite: bool) -> None:
        self.overwrite = overwrite
        self.created: list[Path] = []

    def keeps(self, *paths: Path) -> bool:
        """True when all ``paths`` exist and are to be kept."""
        return not self.overwrite and all(p.exists() for p in paths)

    def write(self, path: Path, data: bytes, mode: int) -> None:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)  # os.open's mode is filtered by the umask
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.created.append(path)


def _ensure_ca(paths: Credentials, days: int, writer: _Writer
               ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, bool]:
    if writer.keeps(paths.ca_cert, paths.ca_key):
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise ValueError(f"{paths.ca_key} does not belong to {paths.ca_cert}: restore the "
                             "matching pair, or regenerate everything with --overwrite (then "
                             "re-register every SuperNode)")
        return key, cert, False
    if not writer.overwrite and (paths.ca_cert.exists() or paths.ca_key.exists()):
        present, missing = ((paths.ca_cert, paths.ca_key) if paths.ca_cert.exists()
                            else (paths.ca_key, paths.ca_cert))
        raise FileNotFoundError(f"{present} exists but {missing} does not: restore it, or "
                                "regenerate everything with --overwrite")
    key = ec.generate_private_key(TLS_CURVE)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swapfl"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "swapfl deployment CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    writer.write(paths.ca_key, _private_pem(key), PRIVATE_MODE)
    writer.write(paths.ca_cert, cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
    return key, cert, True


def _ensure_server_cert(cert_path: Path, key_path: Path, common_name: str,
                        hosts: Sequence[str], ca_key: ec.EllipticCurvePrivateKey,
                        ca_cert: x509.Certificate, days: int, writer: _Writer,
                        reissue: bool) -> None:
    if not reissue and writer.keeps(cert_path, key_path):
        problem = _server_cert_problem(cert_path, key_path, hosts, ca_cert)
        if problem is None:
            return
        log.warning("re-issuing %s: %s", cert_path, problem)
    key = ec.generate_private_key(TLS_CURVE)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swapfl"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hosts]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    writer.write(key_path, _private_pem(key), PRIVATE_MODE)
    writer.write(cert_path, cert.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)


def _server_cert_problem(cert_path: Path, key_path: Path, hosts: Sequence[str],
                         ca_cert: x509.Certificate) -> str | None:
    """Why an existing server certificate cannot be kept, or None."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return "not signed by the current CA"
    if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        return "expired"
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except PermissionError:
        key = None  # handed to the containers' user (docker/generate-credentials.sh)
    if key is not None and key.public_key() != cert.public_key():
        return f"{key_path.name} does not belong to it"
    missing = [h for h in hosts if _general_name(h) not in set(certificate_hosts(cert))]
    return f"subjectAltName lacks {', '.join(missing)}" if missing else None


def _ensure_supernode_key(node: SuperNodeCredentials, writer: _Writer) -> None:
    if writer.keeps(node.auth_private_key, node.auth_public_key):
        return
    if not writer.overwrite and node.auth_private_key.exists():
        # The public half was lost: derive it again (same identity, nothing to re-register).
        key = serialization.load_ssh_private_key(node.auth_private_key.read_bytes(), None)
        writer.write(node.auth_public_key, _openssh_public(key.public_key(), node.index),
                     PUBLIC_MODE)
        return
    if not writer.overwrite and node.auth_public_key.exists():
        raise FileNotFoundError(
            f"{node.auth_public_key} exists but its private key {node.auth_private_key} does "
            f"not: that identity is lost. Unregister it (flwr supernode unregister <node-id> "
            f"<connection>), delete the .pub file and run again to create a new one")
    key = ec.generate_private_key(SUPERNODE_CURVE)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    writer.write(node.auth_private_key, private, PRIVATE_MODE)
    writer.write(node.auth_public_key, _openssh_public(key.public_key(), node.index),
                 PUBLIC_MODE)


def _ensure_secret(path: Path, writer: _Writer) -> None:
    if writer.keeps(path):
        return
    # Flower reads the file as exact raw bytes: printable hex, no trailing newline.
    writer.write(path, secrets.token_hex(32).encode("ascii"), PRIVATE_MODE)


def certificate_hosts(cert: x509.Certificate) -> list[x509.GeneralName]:
    """The subjectAltName entries of ``cert`` (DNS names and IP addresses)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False,
        key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _openssh_public(key: ec.EllipticCurvePublicKey, index: int) -> bytes:
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line + f" swapfl-supernode-{index}\n".encode("ascii")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.credentials",
        description="Generate the TLS certificates, SuperNode authentication keys and SuperExec "
                    "secrets of a secure swapfl deployment. Existing files are kept.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--supernodes", type=int, required=True,
                        help="number of SuperNodes (keys supernode-1 .. supernode-N)")
    parser.add_argument("--host", action="append", dest="hosts", metavar="HOST",
                        help="a name or IP address clients use to reach the SuperLink (repeat "
                             f"the flag; default: {' '.join(DEFAULT_HOSTS)})")
    parser.add_argument("--days", type=int, default=365, help="validity (default: 365)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing files too (new CA and keys: every SuperNode "
                             "must be registered again)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        creds = generate_credentials(args.out, args.supernodes, args.hosts or DEFAULT_HOSTS,
                                     args.days, args.overwrite)
    except (ValueError, OSError) as err:
        parser.exit(2, f"error: {err}\n")
    for path in creds.created:
        log.info("wrote %s", path)
    log.info("%s: %d file(s) written, the others kept", creds.out_dir, len(creds.created))
    return 0


if __name__ == "__main__":
    sys.exit(main())
