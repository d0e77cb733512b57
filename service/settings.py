"""Every setting of the service, read once from ``DIGITS_*`` environment variables.

Checked at start-up with messages a user can act on: a bad value stops the service before it
binds a port, naming the variable and what would be accepted.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024


class BatchingSettings(BaseModel):
    """How one model's requests are grouped into forward passes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(default=64, ge=1, le=4096)
    max_wait_ms: float = Field(default=2.0, ge=0.0, le=1000.0)
    queue_size: int = Field(default=1024, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> BatchingSettings:
        if self.queue_size < self.max_batch_size:
            raise ValueError(
                f"queue_size ({self.queue_size}) must be at least max_batch_size "
                f"({self.max_batch_size}), or batches could never fill"
            )
        return self


class Settings(BaseSettings):
    """The service's configuration. Each field is the variable ``DIGITS_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="DIGITS_", extra="ignore", frozen=True, validate_default=True
    )

    # --- where and what to serve
    host: str = Field(default="127.0.0.1", description="Interface to bind; 0.0.0.0 in containers.")
    port: int = Field(default=8000, ge=1, le=65535)
    model_dir: Path = Field(default=Path("models"), description="Folder of model packages.")
    default_model: str = Field(default="default", description="Model used when none is named.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when available, else CPU."
    )
    require_default_model: bool = Field(
        default=True, description="Refuse to start when the default model cannot be served."
    )
    selftest: bool = Field(
        default=True, description="Check shipped digits on every model before it serves."
    )
    reload_interval_s: float = Field(
        default=0.0, ge=0.0, description="Re-scan model_dir this often (0: only on POST reload)."
    )

    # --- batching (defaults for every model; per-model overrides below)
    max_batch_size: int = Field(default=64, ge=1, le=4096)
    max_wait_ms: float = Field(default=2.0, ge=0.0, le=1000.0)
    queue_size: int = Field(default=1024, ge=1, le=1_000_000)
    batching: dict[str, BatchingSettings] = Field(
        default_factory=dict,
        description='Per-model overrides as JSON: {"lenet5": {"max_batch_size": 128}}.',
    )
    # --- admission (service.http.admission)
    latency_target_ms: float = Field(
        default=250.0,
        gt=0.0,
        description="Admission adapts how many /predict requests may be in progress so that "
        "in every interval of half this length the quickest quarter are answered within it, "
        "from arrival (no standing queue); the rest are refused with 503 before their body is "
        "read.",
    )
    min_in_flight: int = Field(
        default=8, ge=1, description="The adaptive limit never goes below this."
    )
    initial_in_flight: int = Field(default=64, ge=1, description="Where the adaptive limit starts.")
    max_in_flight: int = Field(
        default=0,
        ge=0,
        description="A fixed limit on /predict requests in progress instead of the adaptive "
        "one (0: adaptive).",
    )
    memory_budget_mb: int = Field(
        default=1024,
        ge=64,
        description="Memory for requests: decoding (preprocess_threads x max_image_pixels x "
        "4 bytes) and, of the rest, request bodies (3 bytes held per body byte). The default "
        "fits a 2 GiB container with the models loaded.",
    )
    request_timeout_ms: float = Field(
        default=5000.0,
        gt=0.0,
        description="A request not yet run this long after it arrived gets a 504.",
    )

    # --- inputs
    max_body_bytes: int = Field(default=10 * MiB, ge=1024)
    max_image_pixels: int = Field(
        default=40_000_000, ge=28 * 28, description="Width x height, checked from the header."
    )
    max_batch_files: int = Field(default=64, ge=1, description="Files per /predict/batch call.")
    max_read_digits: int = Field(
        default=32, ge=1, le=256, description="The most digits POST /read reads in one picture."
    )
    uncertain_below: float = Field(
        default=0.9, ge=0.0, le=1.0, description="Confidence under which `uncertain` is true."
    )

    # --- process
    torch_threads: int = Field(default=1, ge=1, description="Intra-op threads for inference.")
    lone_on_loop_below_ms: float = Field(
        default=0.25,
        ge=0.0,
        description="A lone request runs on the event loop (no thread hand-off) for models "
        "whose one-image forward pass takes less than this (0: never).",
    )
    preprocess_threads: int = Field(
        # At most 4: each thread reserves a decode's memory out of memory_budget_mb (160 MB
        # at the default pixel limit), and past a few threads the GIL, not the cores, limits.
        default_factory=lambda: min(4, len(os.sched_getaffinity(0))),
        ge=1,
        description="Threads decoding and preprocessing images (default: one per CPU the "
        "process may run on, at most 4; the imaging primitives release the GIL).",
    )
    drain_delay_s: float = Field(
        default=0.0,
        ge=0.0,
        description="After SIGTERM, keep serving this long with /readyz at 503, so load "
        "balancers stop sending before the port closes (containers set 5).",
    )
    shutdown_grace_s: float = Field(
        default=10.0, ge=0.0, description="Then, time for the requests admitted to finish."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    # --- access
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated keys; when set, /predict and /models need one.",
    )
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated keys for POST /models/reload (API keys do not do). With "
        "API keys set and no admin key, reload is off.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed by CORS (none: off)."
    )

    @field_validator("api_keys", "admin_keys", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("api_keys", "admin_keys")
    @classmethod
    def _keys_long_enough(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            if len(key.get_secret_value()) < 16:
                raise ValueError("each API key must be at least 16 characters long")
        return keys

    @model_validator(mode="after")
    def _batching_consistent(self) -> Settings:
        # Validates the top-level trio the same way the per-model overrides are validated.
        self.default_batching  # noqa: B018
        return self

    @cached_property
    def default_batching(self) -> BatchingSettings:
        return BatchingSettings(
            max_batch_size=self.max_batch_size,
            max_wait_ms=self.max_wait_ms,
            queue_size=self.queue_size,
        )

    @property
    def decode_reserve_bytes(self) -> int:
        """Memory the decode threads may hold at once: an RGBA copy of the largest image each."""
        return self.preprocess_threads * self.max_image_pixels * 4

    @property
    def body_budget_bytes(self) -> int:
        """What :attr:`memory_budget_mb` leaves for request bodies."""
        return self.memory_budget_mb * MiB - self.decode_reserve_bytes

    @model_validator(mode="after")
    def _budget_holds_a_body(self) -> Settings:
        from_bodies = self.body_budget_bytes
        if from_bodies < 3 * self.max_body_bytes:
            raise ValueError(
                f"memory_budget_mb ({self.memory_budget_mb}) leaves {from_bodies // MiB} MiB "
                f"for request bodies after decoding ({self.decode_reserve_bytes // MiB} MiB: "
                "preprocess_threads x max_image_pixels x 4), less than one body of "
                f"max_body_bytes needs (3 x {self.max_body_bytes // MiB} MiB): raise "
                "DIGITS_MEMORY_BUDGET_MB, or lower DIGITS_MAX_IMAGE_PIXELS, "
                "DIGITS_PREPROCESS_THREADS or DIGITS_MAX_BODY_BYTES"
            )
        return self

    def batching_for(self, model_name: str) -> BatchingSettings:
        """The batching in force for one model: its override, else the defaults."""
        return self.batching.get(model_name, self.default_batching)

    def check_model_dir(self) -> None:
        """Fail early, and helpfully, when there is nothing to serve."""
        if not self.model_dir.is_dir():
            raise SystemExit(
                f"DIGITS_MODEL_DIR={self.model_dir} is not a folder (resolved: "
                f"{self.model_dir.resolve()}). Point it at a folder of model packages "
                "<name>/<version>/metadata.json, e.g. the repository's models/, or train some "
                "with `make train`."
            )
