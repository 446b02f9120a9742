"""Three grid nodes as separate gunicorn servers, each with its own database and data folder, the way
operators start them: for the encrypted-inference tests and for bench/smpc_inference.py.

Each node gets a fresh database: a SQLite file in its folder, or, given a PostgreSQL server URL, a new
database on it (dropped again by `stop`). Each has its own key pair (made in its folder before it
starts, as `manage.py smpc_identity` makes it) and trusts the other two by their keys. With `tls`, a CA
made here signs each node's certificate, the nodes serve https and check each other's certificates
against that CA (SSL_CERT_FILE); clients of the cluster must trust `ca_file` too.
"""

import contextlib
import datetime
import ipaddress
import os
import re
import secrets
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smpc_app.identity import KEY_FILE, load_or_create

REPO = Path(__file__).resolve().parents[2]

LISTENING = re.compile(r"Listening at: https?://127\.0\.0\.1:(\d+)")
ROLES = ("worker0", "worker1", "provider")


@dataclass
class NodeServer:
    """One node: its URL once serving, its gunicorn process group, folder, database and log."""

    name: str
    data_dir: Path
    database_url: str
    log: Path
    public_key: str = ""
    url: str = ""
    process: subprocess.Popen | None = None

    def kill(self) -> None:
        """SIGKILL the master and its workers at once, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@dataclass
class SmpcCluster:
    """Two workers and a crypto provider on loopback ports; `start()` migrates and serves them."""

    root: Path
    postgres_url: str | None = None
    smpc_timeout: int = 10
    environment: dict[str, str] = field(default_factory=dict)
    tls: bool = False
    nodes: list[NodeServer] = field(default_factory=list)

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed every node's certificate (with `tls`)."""
        return self.root / "ca.pem"

    def start(self) -> "SmpcCluster":
        """Create the databases, migrate them side by side, start the servers, wait until they answer, and
        make each node trust the other two."""
        suffix = secrets.token_hex(4)
        for name in ROLES:
            data_dir = self.root / name
            data_dir.mkdir(parents=True, exist_ok=True)
            if self.postgres_url:
                database_url = _create_postgres_database(self.postgres_url, f"gridnode_smpc_{name}_{suffix}")
            else:
                database_url = f"sqlite:///{data_dir / 'db.sqlite3'}"
            node = NodeServer(name, data_dir, database_url, data_dir / "server.log")
            node.public_key = load_or_create(data_dir / KEY_FILE)[0].public_key
            self.nodes.append(node)
        if self.tls:
            _make_certificates(self.root, [node.data_dir for node in self.nodes])
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(self._migrate, self.nodes))
        for node in self.nodes:
            self._serve(node)
        for node in self.nodes:
            _wait_until_serving(node, self.ca_file if self.tls else None)
        for node in self.nodes:
            for other in self.nodes:
                if other is not node:
                    trust(node, other)
        return self

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def _environment(self, node: NodeServer) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if name != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(
            DJANGO_SETTINGS_MODULE="gridnode.settings",
            DATABASE_URL=node.database_url,
            GRIDNODE_DATA_DIR=str(node.data_dir),
            SECRET_KEY=secrets.token_hex(32),
            GRIDNODE_SMPC_TIMEOUT=str(self.smpc_timeout),
            GRIDNODE_BIND="127.0.0.1:0",
            GRIDNODE_WORKERS="2",  # threads: gunicorn.conf.py's default for SMPC nodes
            GRIDNODE_LOG_LEVEL="WARNING",
        )
        env.pop("GRIDNODE_SMPC_SECRET", None)
        if self.tls:
            env["SSL_CERT_FILE"] = str(self.ca_file)  # the node's own calls to its peers check against our CA
        env.update(self.environment)
        return env

    def _migrate(self, node: NodeServer) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=REPO,
            env=self._environment(node),
            check=True,
            capture_output=True,
        )

    def _serve(self, node: NodeServer) -> None:
        tls = ["--certfile", str(node.data_dir / "cert.pem"), "--keyfile", str(node.data_dir / "key.pem")]
        with open(node.log, "wb") as output:
            node.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "gridnode.wsgi", "--no-control-socket", *(tls if self.tls else [])],
                cwd=REPO,
                env=self._environment(node),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        """Kill every server and drop the PostgreSQL databases made for them."""
        for node in self.nodes:
            node.kill()
        if self.postgres_url:
            for node in self.nodes:
                _drop_postgres_database(self.postgres_url, urlsplit(node.database_url).path.lstrip("/"))


def trust(node: NodeServer, other: NodeServer) -> None:
    """Make `node` trust `other` (at its URL, by its key), as `manage.py smpc_trust add` would, in its database."""
    row = (other.url, other.public_key, other.name, datetime.datetime.now(datetime.UTC))
    statement = "INSERT INTO smpc_app_trustednode (url, public_key, label, created_at) VALUES ({0}, {0}, {0}, {0})"
    if node.database_url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(urlsplit(node.database_url).path[1:])) as connection, connection:
            connection.execute(statement.format("?"), (*row[:3], row[3].isoformat()))
    else:
        import psycopg2

        with contextlib.closing(psycopg2.connect(node.database_url)) as connection, connection:
            connection.cursor().execute(statement.format("%s"), row)


def _make_certificates(root: Path, node_folders: list[Path]) -> None:
    """A CA (root/ca.pem) and, in each node's folder, a certificate for 127.0.0.1 it signed, with its key."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "grid node test CA")])
    ca_identifier = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_certificate = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(ca_identifier, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (root / "ca.pem").write_bytes(ca_certificate.public_bytes(serialization.Encoding.PEM))
    for folder in node_folders:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_identifier), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        (folder / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (folder / "key.pem").chmod(0o600)


def _wait_until_serving(node: NodeServer, ca_file: Path | None, within: float = 60) -> None:
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise RuntimeError(f"{node.name} exited with {node.process.returncode}:\n{node.log.read_text()}")
        if not node.url and (found := LISTENING.search(node.log.read_text())):
            node.url = f"{'https' if ca_file else 'http'}://127.0.0.1:{found.group(1)}"
        if node.url:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(node.url + "/healthz", timeout=5, context=context) as answer,
            ):
                if answer.status == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"{node.name} did not serve within {within} s:\n{node.log.read_text()}")


def _admin_connection(postgres_url: str):
    import psycopg2

    parts = urlsplit(postgres_url)
    connection = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
    connection.autocommit = True
    return connection


def _create_postgres_database(postgres_url: str, name: str) -> str:
    """A new, empty database on the server of `postgres_url`; answer its URL."""
    connection = _admin_connection(postgres_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))


def _drop_postgres_database(postgres_url: str, name: str) -> None:
    connection = _admin_connection(postgres_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        connection.close()
