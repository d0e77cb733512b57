"""Fixtures every test folder may use: real servers shared by the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.conftest import copy_bundled, serve_in_subprocess, write_package


@pytest.fixture(scope="session")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real server for the session: lenet5 (the default) and mlp, trained, no API key.
    Tests that use it must not change what it serves."""
    root = tmp_path_factory.mktemp("trained-service")
    model_dir = root / "models"
    copy_bundled(model_dir, "lenet5")
    copy_bundled(model_dir, "mlp")
    with serve_in_subprocess(model_dir, root / "server.log", DIGITS_DEFAULT_MODEL="lenet5") as (
        url,
        _,
    ):
        yield url


#: The key of :func:`keyed_service_url`'s server.
SERVICE_KEY = "test-service-key-0123456789"


@pytest.fixture(scope="session")
def keyed_service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real server for the session that requires :data:`SERVICE_KEY`, serving an
    untrained ``tiny`` model (self-test off): for tests of how clients send the key."""
    root = tmp_path_factory.mktemp("keyed-service")
    model_dir = root / "models"
    write_package(model_dir, "tiny")
    with serve_in_subprocess(
        model_dir,
        root / "server.log",
        DIGITS_DEFAULT_MODEL="tiny",
        DIGITS_SELFTEST="false",
        DIGITS_API_KEYS=SERVICE_KEY,
    ) as (url, _):
        yield url
