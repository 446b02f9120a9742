"""Fixtures of the models_app tests."""

import os

import pytest

from models_app import executor


@pytest.fixture
def own_pool(monkeypatch, settings):
    """Start a pool of inference processes of this test's own, which this test process's inferences then go
    to: `own_pool(processes=N, allocator=...)` (the allocator default: the settings'). Every pool it started
    stops at teardown, and the test session's pool, which start_pool replaces, is put back."""
    for name in (executor.ADDRESS_VARIABLE, executor.STARTED_VARIABLE):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    pools = []

    def start(*, processes: int = 1, allocator: str | None = None):
        monkeypatch.setenv("GRIDNODE_INFERENCE_PROCESSES", str(processes))
        if allocator is not None:
            settings.GRIDNODE_INFERENCE_ALLOCATOR = allocator
        pools.append(executor.start_pool())
        return pools[-1]

    yield start
    for pool in pools:
        pool.terminate()
        pool.wait(timeout=10)
