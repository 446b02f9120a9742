"""Encrypted inference end to end: three live nodes (two workers, a crypto provider), each a gunicorn
server with its own database and folder, driven only over HTTP through gridclient."""

import datetime
import ipaddress
import json
import os
import secrets
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn

from gridclient import GridNodeClient, cli
from gridclient.encrypted import EncryptedInferenceFailed, host_encrypted_model, run_encrypted_inference
from gridclient.errors import GENERIC, InvalidRequest, ServerError, Unauthorized
from smpc_app.identity import load_or_create
from smpc_protocol import ring, wire
from smpc_protocol.hosting import split_model
from smpc_protocol.maps import weight_matrix
from tests.smpc_app.live_nodes import NodeServer, SmpcCluster, trust

# A short node timeout, so that the crashed-peer test ends quickly.
NODE_TIMEOUT = 3


def _postgres_server_url() -> str | None:
    """CI's DATABASE_URL (a PostgreSQL server the nodes get fresh databases on), else None for SQLite files."""
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Three nodes serving https with certificates from a CA made for the test, checked both by the nodes
    (calling each other) and by this client (SSL_CERT_FILE)."""
    nodes = SmpcCluster(
        tmp_path_factory.mktemp("smpc"),
        postgres_url=_postgres_server_url(),
        smpc_timeout=NODE_TIMEOUT,
        # Every request logged (one JSON line each) and access-logged, so the privacy test reads those too.
        environment={"GRIDNODE_LOG_LEVEL": "INFO", "GRIDNODE_ACCESS_LOG": "-"},
        tls=True,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_CERT_FILE", str(nodes.ca_file))
        try:
            yield nodes.start()
        finally:
            nodes.stop()


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)).eval()


def cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=5, stride=2, padding=2),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 7 * 7, 10),
    ).eval()


def host(cluster, model, input_shape, *, allow_remote_inference=True) -> str:
    model_id = f"m-{secrets.token_hex(4)}"
    worker0, worker1, provider = cluster.urls
    host_encrypted_model(
        model,
        input_shape,
        model_id,
        workers=[worker0, worker1],
        crypto_provider=provider,
        allow_remote_inference=allow_remote_inference,
    )
    return model_id


def test_it_answers_the_mlp_like_plaintext_without_any_node_holding_weights_or_inputs(cluster):
    model = mlp()
    model_id = host(cluster, model, (784,))
    inputs = torch.rand(8, 784)

    result = run_encrypted_inference(model_id, inputs, via=cluster.urls[0])

    expected = model(inputs).double()
    assert (result.output - expected).abs().max() < 1e-3
    assert torch.equal(result.output.argmax(dim=1), expected.argmax(dim=1))
    assert result.rounds == 17  # 3 weighted layers, 1 round each; 2 ReLUs, 7 rounds each
    assert min(result.bytes_per_worker) > 0
    shares = [GridNodeClient(url)._transport.json("GET", f"/encrypted-models/{model_id}") for url in cluster.urls]
    assert [(share["share"]["role"], share["share"]["party"]) for share in shares] == [
        ("worker", 0),
        ("worker", 1),
        ("crypto_provider", None),
    ]


def test_concurrent_inferences_each_get_their_own_answer(cluster):
    model = mlp()
    model_id = host(cluster, model, (784,))
    inputs = [torch.rand(1, 784) for _ in range(8)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda x: run_encrypted_inference(model_id, x, workers=cluster.urls[:2]), inputs))

    for x, result in zip(inputs, results, strict=True):
        assert (result.output - model(x).double()).abs().max() < 1e-3


def test_it_runs_a_small_cnn_within_a_hundredth_of_plaintext(cluster):
    model = cnn()
    model_id = host(cluster, model, (1, 28, 28))
    inputs = torch.rand(2, 1, 28, 28)

    result = run_encrypted_inference(model_id, inputs, workers=cluster.urls[:2])

    assert (result.output - model(inputs).double()).abs().max() < 1e-2


def _node_bytes(cluster) -> dict[str, bytes]:
    """Everything each node keeps: every file in its folder (share files, SQLite database, log) and,
    on PostgreSQL, a dump of its database."""
    kept = {}
    for node in cluster.nodes:
        blobs = [path.read_bytes() for path in sorted(node.data_dir.rglob("*")) if path.is_file()]
        if node.database_url.startswith("postgres"):
            dump = subprocess.run(["pg_dump", node.database_url], capture_output=True, check=False)
            blobs.append(dump.stdout)
        kept[node.name] = b"".join(blobs)
    return kept


def _patterns(values: torch.Tensor) -> list[bytes]:
    """Byte strings that would be in a file holding these numbers in clear: 4 consecutive fixed-point
    int64s (32 bytes) and 4 consecutive float32s (16 bytes), several places along the tensor."""
    flat = values.flatten()
    fixed = ring.encode(flat).numpy()
    floats = flat.to(torch.float32).numpy()
    starts = range(0, flat.numel() - 4, max(1, flat.numel() // 20))
    return [fixed[i : i + 4].tobytes() for i in starts] + [floats[i : i + 4].tobytes() for i in starts]


def test_no_node_keeps_a_weight_or_an_input_in_clear_in_its_files_database_or_log(cluster):
    model = mlp()
    model_id = host(cluster, model, (784,))
    # Inputs that are easy to spot if they leak: a recognisable ramp.
    inputs = torch.arange(784, dtype=torch.float32).reshape(1, 784) / 784
    run_encrypted_inference(model_id, inputs, workers=cluster.urls[:2])

    secrets_in_clear = _patterns(weight_matrix(model[0])) + _patterns(model[0].bias.detach()) + _patterns(inputs)
    kept_by_node = _node_bytes(cluster)
    # The search does see each node's database (the model's spec is stored there in clear) and its log.
    assert all(b"in_features" in kept for kept in kept_by_node.values())
    assert all(f"/encrypted-models/{model_id}/".encode() in kept for kept in kept_by_node.values())
    for name, kept in kept_by_node.items():
        leaked = [pattern.hex() for pattern in secrets_in_clear if pattern in kept]
        assert not leaked, f"{name} keeps {len(leaked)} weight or input patterns in clear"


def test_the_owner_can_keep_an_encrypted_model_from_being_run(cluster):
    model_id = host(cluster, mlp(), (784,), allow_remote_inference=False)

    with pytest.raises(EncryptedInferenceFailed) as failure:
        run_encrypted_inference(model_id, torch.rand(1, 784), workers=cluster.urls[:2])

    assert failure.value.status == 403


def test_a_session_id_is_used_once_and_its_randomness_is_never_dealt_twice(cluster):
    model_id = host(cluster, mlp(), (784,))
    session = secrets.token_hex(16)
    worker0, worker1 = (GridNodeClient(url, timeout=30) for url in cluster.urls[:2])
    x0, x1 = ring.share(ring.encode(torch.rand(1, 784)))

    answers = {}
    thread = threading.Thread(
        target=lambda: answers.setdefault(
            1, worker1.evaluate_share(model_id, wire.pack({"x": x1}, {"session": session}))
        )
    )
    thread.start()
    worker0.evaluate_share(model_id, wire.pack({"x": x0}, {"session": session}))
    thread.join()

    with pytest.raises(ServerError) as again:
        worker0.evaluate_share(model_id, wire.pack({"x": x0}, {"session": session}))
    assert getattr(again.value, "status", None) == 502
    # The provider's 409 ("already dealt"), named by its status: a peer's words never reach the client.
    assert f"The crypto provider at {cluster.urls[2]} refused the randomness of session {session} (HTTP 409)" in str(
        again.value
    )


def test_a_bad_input_share_is_a_clear_400_and_no_session_starts(cluster):
    model_id = host(cluster, mlp(), (784,))
    worker0 = GridNodeClient(cluster.urls[0])

    for message, needle in [
        (b"not a message", "not an SMPC message"),
        (wire.pack({"x": torch.zeros(1, 783, dtype=torch.int64)}, {"session": secrets.token_hex(16)}), "shape"),
        (wire.pack({"x": torch.zeros(1, 784, dtype=torch.int64)}, {"session": "short"}), "session"),
        (wire.pack({}, {"session": secrets.token_hex(16)}), "exactly one tensor"),
    ]:
        with pytest.raises(InvalidRequest) as refused:
            worker0.evaluate_share(model_id, message)
        assert refused.value.status == 400, refused.value
        assert needle in str(refused.value)


def test_node_to_node_calls_need_a_trusted_nodes_signature(cluster):
    worker1 = GridNodeClient(cluster.urls[1])
    provider = GridNodeClient(cluster.urls[2])
    message = wire.pack({}, {"session": secrets.token_hex(16), "party": 0, "batch": 1, "spec_digest": "x"})

    for node, path in [(worker1, "/smpc/exchange"), (provider, "/encrypted-models/any/randomness")]:
        with pytest.raises(Unauthorized) as refused:
            node._transport.message(path, message, kinds=GENERIC)
        assert refused.value.status == 401


def test_the_command_line_runs_an_encrypted_model_and_prints_its_output(cluster, capsys):
    model = mlp()
    model_id = host(cluster, model, (784,))
    inputs = torch.rand(1, 784)

    code = cli.main(["--url", cluster.urls[0], "encrypted-infer", model_id, "--data", json.dumps(inputs.tolist())])

    assert code == 0
    printed = torch.tensor(json.loads(capsys.readouterr().out), dtype=torch.float64)
    assert (printed - model(inputs).double()).abs().max() < 1e-3


def test_the_command_line_refuses_data_that_is_not_numbers_before_sending_anything(cluster, capsys):
    code = cli.main(["--url", cluster.urls[0], "encrypted-infer", "any", "--data", "[[1, 2], [3]]"])

    assert code == cli.USAGE
    assert "JSON array of numbers" in capsys.readouterr().err


def test_a_peer_that_never_joins_the_session_is_a_504_within_the_timeout(cluster):
    """The client reaches worker 0 only: worker 0 waits for worker 1's side of the session, then gives up."""
    model_id = host(cluster, mlp(), (784,))
    x0, _ = ring.share(ring.encode(torch.rand(1, 784)))
    worker0 = GridNodeClient(cluster.urls[0], timeout=NODE_TIMEOUT * 4)

    started = time.monotonic()
    with pytest.raises(ServerError) as failure:
        worker0.evaluate_share(model_id, wire.pack({"x": x0}, {"session": secrets.token_hex(16)}))

    assert failure.value.status == 502  # worker 1 answered worker 0's first round with its own 504
    assert f"The peer worker at {cluster.urls[1]} refused round 0 of session" in str(failure.value)
    assert "(HTTP 504)" in str(failure.value)
    assert time.monotonic() - started < NODE_TIMEOUT * 3


def test_a_node_checks_the_certificate_of_every_node_it_calls(cluster, tmp_path):
    """A node trusted by key but serving a certificate no trusted CA signed is never sent a request."""
    impostor = ImpostorTLSServer(tmp_path)
    try:
        impostor_node = NodeServer("impostor", tmp_path, "", tmp_path / "log", url=impostor.url)
        impostor_node.public_key = load_or_create(tmp_path / "key")[0].public_key
        model = mlp()
        shared = split_model(model, (784,))
        model_id = f"m-{secrets.token_hex(4)}"
        workers = cluster.urls[:2]
        for party, node in enumerate(cluster.nodes[:2]):
            client = GridNodeClient(node.url)
            client.register_encrypted_model(model_id, workers, impostor.url)
            client.upload_model_share(
                model_id,
                shared.worker_parts[party],
                spec=shared.spec.to_json(),
                role="worker",
                party=party,
                allow_remote_inference=True,
            )
            trust(node, impostor_node)

        with pytest.raises(EncryptedInferenceFailed) as failure:
            run_encrypted_inference(model_id, torch.rand(1, 784), workers=workers)

        assert failure.value.status == 502
        assert f"The crypto provider at {impostor.url} is unreachable" in str(failure.value)
        # The node gives up on the certificate before the impostor's thread sees its handshake fail.
        settled = time.monotonic() + 10
        while impostor.handshakes_refused == 0 and time.monotonic() < settled:
            time.sleep(0.02)
        assert impostor.handshakes_refused >= 1
        assert impostor.requests_read == 0
    finally:
        impostor.close()


class ImpostorTLSServer:
    """An https server on 127.0.0.1 whose certificate is self-signed: it counts handshakes that failed and
    requests it managed to read."""

    def __init__(self, folder):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256())
        )
        (folder / "impostor.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        (folder / "impostor.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(folder / "impostor.pem", folder / "impostor.key")
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.socket.getsockname()[1]}"
        self.handshakes_refused = 0
        self.requests_read = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            with connection:
                try:
                    with self.context.wrap_socket(connection, server_side=True) as tls:
                        if tls.recv(1):
                            self.requests_read += 1
                except (ssl.SSLError, OSError):
                    self.handshakes_refused += 1

    def close(self):
        self.socket.close()


def test_a_crashed_peer_gives_the_client_a_clear_error_within_the_timeout_never_an_answer(cluster):
    """Last in this module: it kills worker 1."""
    model_id = host(cluster, mlp(), (784,))
    cluster.nodes[1].kill()

    started = time.monotonic()
    with pytest.raises(EncryptedInferenceFailed) as failure:
        run_encrypted_inference(model_id, torch.rand(1, 784), workers=cluster.urls[:2], timeout=NODE_TIMEOUT * 3)

    assert time.monotonic() - started < NODE_TIMEOUT * 3
    assert cluster.urls[1] in str(failure.value) or "peer worker" in str(failure.value)
