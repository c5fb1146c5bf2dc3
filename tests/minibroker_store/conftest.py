"""Helpers shared by the store tests: running a MessageJournal and looking at its files."""

import logging

import pytest


@pytest.fixture
def store_log(caplog):
    caplog.set_level(logging.INFO, logger="minibroker.store")
    return caplog
