"""A client's `SCRIPT_NAME` header has no effect, through nginx (which drops it) and straight to gunicorn
(gunicorn.conf.py honours no forwarder headers): `/x/models` is not served as `/models`, and a mismatch is
not gunicorn's own 500 page."""

import pytest

from tests.reliability.helpers import request


@pytest.mark.parametrize("route", ["proxied", "direct"])
def test_it_ignores_a_script_name_header(stack, route):
    url = stack.proxied_url if route == "proxied" else stack.direct_url

    prefixed = request(url, "GET", "/x/models", headers={"SCRIPT_NAME": "/x"})
    mismatched = request(url, "GET", "/models", headers={"SCRIPT_NAME": "/x"})

    assert prefixed == (404, {"error": "Not found."})
    assert mismatched[0] == 200
    assert mismatched[1]["success"] is True
    assert "ConfigurationProblem" not in stack.gunicorn_log.read_text()
