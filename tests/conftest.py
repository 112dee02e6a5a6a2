"""Shared pytest configuration for the snsot test suite.

The helpers live in ``checks.py`` (result checks and oracles) and
``strategies.py`` (hypothesis strategies); this directory is put on
``sys.path`` so test modules can import them whatever pytest's import mode.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    # Slow tests still run by default (CI has the budget); `-m "not slow"` skips them locally.
    config.addinivalue_line("markers", "slow: takes a minute or more; deselect with -m 'not slow'")
