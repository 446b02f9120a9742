"""Idle, slow and stalled connections held open while ordinary callers are answered (docs/operations.md
production"): through nginx they are, straight to gunicorn they are not.

Each attack is held for a few seconds past nginx's client timeouts in these tests (3 s), so the stalled
and idle connections are closed by nginx during it while the slow ones (a byte a second) are kept.
"""

import select
import time

import pytest

from tests.production.attacks import Attack, ordinary_calls
from tests.reliability.helpers import json_of, status_of

WINDOW_SECONDS = 8
ATTACKS = {
    "idle": {"idle": 150},
    "slow_body": {"slow": 10},
    "stalled": {"stalled": 6},
    "together": {"idle": 150, "slow": 10, "stalled": 6},
}
ROUTES = [
    "proxied",
    pytest.param(
        "direct",
        marks=pytest.mark.xfail(
            strict=True, reason="bare gunicorn: each held connection holds a worker's thread while it waits"
        ),
    ),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("attack", ATTACKS)
def test_it_answers_ordinary_callers_during(stack, attack, route):
    url = stack.proxied_url if route == "proxied" else stack.direct_url
    stack.wait_until_answering(url)
    with Attack(url, **ATTACKS[attack]) as held:
        answered, attempted = ordinary_calls(url, seconds=WINDOW_SECONDS)
        slow_still_open = held.still_open("slow")
    share = answered / attempted if attempted else 0.0
    print(f"{attack} {route}: {answered} of {attempted} answered within 2 s ({share:.0%})")
    stack.wait_until_answering(url)
    if route == "proxied":
        # nginx held the slow uploads the whole time (no limit refused them): the attack was on.
        assert slow_still_open == ATTACKS[attack].get("slow", 0)
    assert attempted >= 20
    assert share >= 0.95


def test_it_limits_the_requests_in_progress_per_client_address(stack):
    limit = 64  # GRIDNODE_CONNECTIONS_PER_CLIENT's default
    with Attack(stack.proxied_url, stalled=limit + 6) as held:
        time.sleep(1)  # the refused ones are answered at once; the held ones wait for the body timeout (3 s)
        answered = [sock.recv(65536) for sock in held.sockets["stalled"] if select.select([sock], [], [], 0)[0]]

    assert len(answered) == 6
    assert all(status_of(answer) == 429 for answer in answered)
    assert json_of(answered[0]) == {"error": "Too many requests at once from this address."}
