"""The inference processes' memory allocator (GRIDNODE_INFERENCE_ALLOCATOR, models_app/executor_pool.py).

Whichever it is, what an inference frees leaves the process's data size, which the memory cap and the
recycling rule count: a process that kept it would be replaced after every large inference, and the
next caller would wait for its model to load again.
"""

import ctypes.util
import os
from pathlib import Path

import pytest
import torch

from models_app.executor import pool_cache
from models_app.executor_pool import GLIBC_TUNABLES, allocator_environment
from tests.conftest import jit_bytes

pytestmark = pytest.mark.django_db

JEMALLOC = ctypes.util.find_library("jemalloc")
needs_jemalloc = pytest.mark.skipif(JEMALLOC is None, reason="libjemalloc2 is not installed (scripts/setup)")


class Churn(torch.nn.Module):
    """Holds 50 tensors of 10 MiB at once (500 MiB, each under glibc's mmap threshold), then frees them."""

    def forward(self, x):
        pieces: list[torch.Tensor] = []
        for _ in range(50):
            pieces.append(torch.ones(2621440))
        total = x * 0
        for piece in pieces:
            total = total + piece[0]
        return total


def predict(api, model_id):
    response = api.post(f"/model/{model_id}", {"data": [1.0]}, format="json")
    return response.status_code, response.json().get("prediction")


def loaded_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def environment_of(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


@needs_jemalloc
def test_the_processes_allocate_with_jemalloc_by_default(api, serve, own_pool):
    pool = own_pool(allocator="jemalloc")
    serve("plain", jit_bytes(torch.nn.Identity()), allow_remote_inference=True)
    assert predict(api, "plain") == (200, [1.0])  # the pool is up

    assert "libjemalloc" in loaded_libraries(pool.pid)
    assert b"MALLOC_CONF=retain:false" in environment_of(pool.pid)


def test_glibc_is_tuned_to_keep_the_memory_an_inference_uses_again(api, serve, own_pool):
    pool = own_pool(allocator="glibc")
    serve("plain", jit_bytes(torch.nn.Identity()), allow_remote_inference=True)
    assert predict(api, "plain") == (200, [1.0])

    assert "libjemalloc" not in loaded_libraries(pool.pid)
    # glibc cuts the variable short where it reads it in its own copy of the environment; os.environ has it whole.
    tunables = [entry for entry in environment_of(pool.pid) if entry.startswith(b"GLIBC_TUNABLES=")]
    assert len(tunables) == 1
    assert f"GLIBC_TUNABLES={GLIBC_TUNABLES}".startswith(tunables[0].decode())
    assert allocator_environment("glibc", {}) == {"GLIBC_TUNABLES": GLIBC_TUNABLES}


@pytest.mark.parametrize("allocator", [pytest.param("jemalloc", marks=needs_jemalloc), "glibc"])
def test_memory_an_inference_freed_leaves_the_process(api, serve, own_pool, allocator):
    """Two 500 MiB inferences in a row run in the same process, the model loaded once: the first one's
    memory went back, or the process would have been replaced as holding too much (_retains_too_much)."""
    own_pool(allocator=allocator)
    serve("churn", jit_bytes(torch.jit.script(Churn())), allow_remote_inference=True)
    misses, hits = pool_cache.misses, pool_cache.hits

    assert predict(api, "churn") == (200, [50.0])
    assert predict(api, "churn") == (200, [50.0])

    assert (pool_cache.misses - misses, pool_cache.hits - hits) == (1, 1)


def test_an_operators_own_allocator_settings_are_kept():
    mine = {"LD_PRELOAD": "/opt/mine.so", "MALLOC_CONF": "narenas:2", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}

    assert allocator_environment("glibc", mine) == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    if JEMALLOC is not None:
        assert allocator_environment("jemalloc", mine) == {
            "LD_PRELOAD": f"{JEMALLOC} /opt/mine.so",
            "MALLOC_CONF": "retain:false,narenas:2",
        }


def test_the_allocator_setting_takes_only_the_two_names():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "gridnode.settings", "GRIDNODE_INFERENCE_ALLOCATOR": "tcmalloc"},
        capture_output=True,
        text=True,
    )

    assert result.returncode != 0
    assert "GRIDNODE_INFERENCE_ALLOCATOR must be jemalloc or glibc, not 'tcmalloc'" in result.stderr
