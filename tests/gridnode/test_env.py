"""Settings from the environment: strict parsers, and a bad value stops start-up naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from gridnode.env import env_bool, env_int, env_list, parse_database_url

REPO = Path(__file__).resolve().parents[2]


def test_postgres_urls_become_a_postgresql_entry():
    entry = parse_database_url("postgres://grid:s%40cret@db.local:6543/nodes?sslmode=require")
    assert entry == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "nodes",
        "USER": "grid",
        "PASSWORD": "s@cret",
        "HOST": "db.local",
        "PORT": "6543",
        "OPTIONS": {"sslmode": "require"},
    }


def test_sqlite_urls_name_a_file():
    assert parse_database_url("sqlite:////var/lib/grid.db")["NAME"] == "/var/lib/grid.db"
    assert parse_database_url("sqlite:///grid.db")["NAME"] == "grid.db"


@pytest.mark.parametrize("url", ["mysql://x/y", "postgres://host", "sqlite://", "postgres://h:port/db", "nonsense"])
def test_bad_database_urls_name_the_variable(url):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        parse_database_url(url)


def test_env_bool_is_strict(monkeypatch):
    monkeypatch.setenv("GRIDNODE_FLAG", "True")
    assert env_bool("GRIDNODE_FLAG", False) is True
    monkeypatch.setenv("GRIDNODE_FLAG", "0")
    assert env_bool("GRIDNODE_FLAG", True) is False
    monkeypatch.setenv("GRIDNODE_FLAG", "sometimes")
    with pytest.raises(ImproperlyConfigured, match="GRIDNODE_FLAG"):
        env_bool("GRIDNODE_FLAG", False)


def test_env_int_is_strict(monkeypatch):
    monkeypatch.setenv("GRIDNODE_N", "12")
    assert env_int("GRIDNODE_N", 1) == 12
    for bad in ["12MB", "-1"]:
        monkeypatch.setenv("GRIDNODE_N", bad)
        with pytest.raises(ImproperlyConfigured, match="GRIDNODE_N"):
            env_int("GRIDNODE_N", 1)


def test_env_list_splits_on_commas(monkeypatch):
    monkeypatch.setenv("ALLOWED_HOSTS", "a.example, b.example,,")
    assert env_list("ALLOWED_HOSTS", ["*"]) == ["a.example", "b.example"]


@pytest.mark.parametrize(
    ("name", "value"),
    [("DATABASE_URL", "mysql://root@localhost/grid"), ("DEBUG", "maybe"), ("GRIDNODE_MODEL_CACHE_SIZE", "lots")],
)
def test_a_bad_value_stops_start_up_naming_the_variable(tmp_path, name, value):
    env = {**os.environ, "GRIDNODE_DATA_DIR": str(tmp_path), name: value}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert name in result.stderr


def test_no_variables_give_sqlite_and_files_in_the_data_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env["GRIDNODE_DATA_DIR"] = str(tmp_path)
    code = (
        "import django; from django.conf import settings; django.setup();"
        "print(settings.DATABASES['default']['ENGINE']); print(settings.DATABASES['default']['NAME']);"
        "print(settings.MEDIA_ROOT)"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import os; os.environ['DJANGO_SETTINGS_MODULE']='gridnode.settings'; {code}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    engine, name, media = result.stdout.split()
    assert engine == "django.db.backends.sqlite3"
    assert Path(name).parent == tmp_path
    assert Path(media) == tmp_path / "files"
    assert (tmp_path / "secret_key").exists()
