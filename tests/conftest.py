"""Shared pytest configuration for the snsot test suite.

The helpers live in ``checks.py`` (result checks and oracles) and
``strategies.py`` (hypothesis strategies); this directory is put on
``sys.path`` so test modules can import them whatever pytest's import mode.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    # Slow tests still run by default (CI has the budget); `-m "not slow"` skips them locally.
    config.addinivalue_line("markers", "slow: takes a minute or more; deselect with -m 'not slow'")


def _local_dask_client(n_workers):
    """A Dask client on a ``LocalCluster`` of ``n_workers`` single-threaded worker processes (closed after)."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def one_worker_cluster():
    yield from _local_dask_client(1)


@pytest.fixture(scope="module")
def dask_client():
    yield from _local_dask_client(2)
