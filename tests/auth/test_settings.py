"""The switches and the TLS settings come from the environment, and bad values stop start-up."""

import os
import subprocess
import sys

import pytest
from django.conf import settings

SHOW = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.GRIDNODE_AUTH_READ, s.GRIDNODE_AUTH_WRITE, s.GRIDNODE_AUTH_INFERENCE, s.GRIDNODE_AUTH_DOWNLOAD, "
    "s.GRIDNODE_AUTH_METRICS, getattr(s, 'SECURE_PROXY_SSL_HEADER', None), s.SESSION_COOKIE_SECURE, "
    "s.CSRF_COOKIE_SECURE, s.CSRF_TRUSTED_ORIGINS)"
)
AUTH_VARIABLES = [f"GRIDNODE_AUTH_{group}" for group in ("READ", "WRITE", "INFERENCE", "DOWNLOAD", "METRICS")]
TLS_VARIABLES = ["GRIDNODE_BEHIND_TLS_PROXY", "CSRF_TRUSTED_ORIGINS"]


def start(tmp_path, **variables) -> subprocess.CompletedProcess:
    """Set Django up in a fresh interpreter with these variables, and print the settings they drive."""
    env = {key: value for key, value in os.environ.items() if key not in AUTH_VARIABLES + TLS_VARIABLES}
    env.update(DJANGO_SETTINGS_MODULE="gridnode.settings", GRIDNODE_DATA_DIR=str(tmp_path), **variables)
    return subprocess.run(
        [sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, cwd=settings.BASE_DIR, timeout=120
    )


def test_without_variables_everything_is_open_and_no_proxy_is_trusted(tmp_path):
    result = start(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"] * 5 + ["None", "False", "False", "[]"]


def test_each_switch_is_read_from_its_variable(tmp_path):
    result = start(tmp_path, GRIDNODE_AUTH_READ="true", GRIDNODE_AUTH_INFERENCE="1", GRIDNODE_AUTH_METRICS="yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:5] == ["True", "False", "True", "False", "True"]


@pytest.mark.parametrize("variable", AUTH_VARIABLES + ["GRIDNODE_BEHIND_TLS_PROXY"])
def test_a_bad_boolean_stops_start_up_naming_the_variable(tmp_path, variable):
    result = start(tmp_path, **{variable: "maybe"})
    assert result.returncode != 0
    assert f"{variable} must be true or false" in result.stderr


def test_behind_a_tls_proxy_the_forwarded_scheme_is_trusted_and_cookies_are_secure(tmp_path):
    result = start(tmp_path, GRIDNODE_BEHIND_TLS_PROXY="true", CSRF_TRUSTED_ORIGINS="https://node.example.org")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("('HTTP_X_FORWARDED_PROTO', 'https') True True ['https://node.example.org']")


def test_an_origin_without_a_scheme_stops_start_up(tmp_path):
    result = start(tmp_path, CSRF_TRUSTED_ORIGINS="https://ok.example, node.example.org")
    assert result.returncode != 0
    assert "CSRF_TRUSTED_ORIGINS" in result.stderr
    assert "'node.example.org'" in result.stderr


@pytest.mark.django_db
def test_the_forwarded_scheme_makes_the_request_secure_only_when_the_proxy_is_trusted(rf, settings):
    request = rf.get("/models", HTTP_X_FORWARDED_PROTO="https")
    assert not request.is_secure()
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert request.is_secure()
