"""What one round message costs between `deliver` and the session's evaluation: the local socket against
the broker (Redis), in one process, without HTTP, TLS or the protocol's arithmetic.

usage: python bench/smpc_rounds.py [ROUNDS=2000] [REDIS_URL=redis://127.0.0.1:6379/0]

For each path, one session: a thread plays party 1's evaluation (`SessionMailbox.exchange`, answering a
few-KB message as the reference MLP's rounds are), the main thread party 0's messages as the exchange
endpoint hands them on (`deliver`, signed as a real peer signs them: round 0 with its key, the others
with the session key). The last lines read:

    smpc_round broker=socket p50_us=... p99_us=... rounds=...
    smpc_round broker=redis p50_us=... p99_us=... rounds=...
"""

import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GRIDNODE_DATA_DIR", tempfile.mkdtemp(prefix="smpc-rounds-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridnode.settings")
os.environ["GRIDNODE_SMPC_TIMEOUT"] = "10"

import django  # noqa: E402

django.setup()

import torch  # noqa: E402
from django.conf import settings  # noqa: E402

from smpc_app import channels, nodeauth  # noqa: E402
from smpc_app.identity import load_or_create, node_identity  # noqa: E402
from smpc_protocol import wire  # noqa: E402

MODEL = "bench"


def one_session(rounds: int, peer_folder: Path) -> list[float]:
    """Microseconds each round took, from party 0's message handed to `deliver` to party 1's reply."""
    peer = load_or_create(peer_folder / "node_key")[0]
    session = secrets.token_hex(16)
    mailbox = channels.SessionMailbox(
        session_id=session,
        model_id=MODEL,
        peer_key=peer.public_key,
        traffic=channels.Traffic(),
        deadline=channels.Deadline(3600),
    )
    payload = {"y": torch.zeros(512, dtype=torch.int64)}  # 4 KB, as a round of the reference MLP

    def evaluate() -> None:
        try:
            for _ in range(rounds):
                mailbox.exchange(payload)
        finally:
            mailbox.close()

    thread = threading.Thread(target=evaluate, daemon=True)
    thread.start()
    exchange_key, exchange_public = nodeauth.new_exchange_key()
    key: bytes | None = None
    took: list[float] = []
    for number in range(rounds):
        meta: dict[str, object] = {"session": session, "model_id": MODEL, "round": number}
        if number == 0:
            meta[channels.SESSION_KEY_META] = exchange_public
        body = wire.pack({"x": torch.zeros(512, dtype=torch.int64)}, meta)
        label = nodeauth.request_label(
            purpose=nodeauth.EXCHANGE,
            sender=peer.public_key,
            recipient=node_identity().public_key,
            model_id=MODEL,
            session_id=session,
            party=0,
            round_number=number,
            body=body,
        )
        header = label.text()
        signature = peer.sign(nodeauth.signed_text(header)) if key is None else nodeauth.session_mac(key, header)
        started = time.perf_counter()
        reply, _headers = channels.deliver(
            label=label, header=header, signature=signature, read_body=lambda body=body: body
        )
        took.append((time.perf_counter() - started) * 1e6)
        if number == 0:
            key = nodeauth.session_key(
                exchange_key,
                wire.unpack_meta(reply).get(channels.SESSION_KEY_META),
                sender=peer.public_key,
                recipient=node_identity().public_key,
                model_id=MODEL,
                session_id=session,
            )
    thread.join(timeout=30)
    return took


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    redis_url = sys.argv[2] if len(sys.argv) > 2 else "redis://127.0.0.1:6379/0"
    lines = []
    with tempfile.TemporaryDirectory(prefix="smpc-rounds-peer-") as folder:
        for name, url in (("socket", ""), ("redis", redis_url)):
            settings.GRIDNODE_BROKER_URL = url
            one_session(50, Path(folder))  # warm up: connections, imports
            took = sorted(one_session(rounds, Path(folder))[1:])
            p50, p99 = took[len(took) // 2], took[min(len(took) - 1, int(len(took) * 0.99))]
            lines.append(f"smpc_round broker={name} p50_us={p50:.0f} p99_us={p99:.0f} rounds={rounds}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
