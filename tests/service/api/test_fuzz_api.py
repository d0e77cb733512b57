"""Property-based fuzzing of the real server against the committed ``openapi.json``: whatever
schemathesis sends, the answer is documented (status, content type, body schema) and never a
server error. A fixed, derandomised budget keeps CI fast and repeatable."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import ignored_auth, positive_data_acceptance

from tests.service.conftest import REPO, copy_bundled, serve_in_subprocess

pytestmark = pytest.mark.slow

schema = schemathesis.openapi.from_path(REPO / "openapi.json")

# With a key configured, the security the document declares is in force. (That a missing or
# wrong key is refused is tested in test_routes.py: schemathesis' own probe for it would carry
# the valid key sent with every request below.)
KEY = "fuzzing-key-0123456789"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz")
    model_dir = root / "models"
    copy_bundled(model_dir, "lenet5")
    with serve_in_subprocess(
        model_dir,
        root / "server.log",
        DIGITS_DEFAULT_MODEL="lenet5",
        DIGITS_LOG_LEVEL="WARNING",
        DIGITS_API_KEYS=KEY,
    ) as (url, _):
        yield url


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case: schemathesis.Case, server_url: str) -> None:
    # Not checked: that every schema-valid body is accepted. A valid PNG need not hold a digit
    # (a 1x1 black image gets 400 no_digit), which is what the service must say.
    case.call_and_validate(
        base_url=server_url,
        headers={"X-API-Key": KEY},
        excluded_checks=[positive_data_acceptance, ignored_auth],
    )


def test_fuzzing_reaches_every_documented_operation() -> None:
    document = json.loads((REPO / "openapi.json").read_text())
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    fuzzed = {
        (op.method.upper(), op.path)
        for op in (r.ok() for r in schema.get_all_operations())  # type: ignore[union-attr]
    }
    assert fuzzed == documented
    assert ("POST", "/predict") in fuzzed
