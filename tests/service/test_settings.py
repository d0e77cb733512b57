"""Settings come from DIGITS_* variables and are checked before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import BatchingSettings, Settings
from tests.service.conftest import REPO


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_PORT", "9001")
    monkeypatch.setenv("DIGITS_MAX_BATCH_SIZE", "32")
    monkeypatch.setenv("DIGITS_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("DIGITS_BATCHING", '{"mlp": {"max_batch_size": 8, "queue_size": 8}}')
    settings = Settings()
    assert settings.port == 9001
    assert settings.host == "127.0.0.1"
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.batching_for("lenet5") == BatchingSettings(max_batch_size=32)
    assert settings.batching_for("mlp").max_batch_size == 8


@pytest.mark.parametrize(
    ("variables", "complaint"),
    [
        ({"port": 0}, "port"),
        ({"max_batch_size": 64, "queue_size": 10}, "queue_size"),
        ({"batching": {"mlp": {"max_batch_size": 64, "queue_size": 1}}}, "queue_size"),
        ({"api_keys": "short"}, "at least 16"),
        ({"device": "tpu"}, "device"),
        ({"uncertain_below": 2}, "uncertain_below"),
    ],
)
def test_bad_values_are_refused_with_the_reason(
    variables: dict[str, object], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        Settings(**variables)  # type: ignore[arg-type]


def test_api_keys_are_secret() -> None:
    settings = Settings(api_keys="a-very-long-secret-key-1,a-very-long-secret-key-2")
    assert len(settings.api_keys) == 2
    assert "a-very-long" not in repr(settings)


def test_missing_model_dir_is_explained(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="DIGITS_MODEL_DIR"):
        Settings(model_dir=tmp_path / "absent").check_model_dir()


def test_cli_names_the_bad_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "openapi"],
        cwd=REPO,
        env={"DIGITS_PORT": "99999", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "DIGITS_PORT" in result.stderr
