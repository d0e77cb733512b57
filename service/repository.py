"""Model packages on disk -> verified, warmed, self-tested models, each behind its own batcher.

A package is loaded in a worker thread (reading, hashing and warming must not stall requests),
and only swapped in once it has passed every check; a package that fails leaves whatever was
serving under its name and version in place.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from service.batcher import Batcher, BatchReport
from service.errors import NotFound, Unavailable
from service.modelcard import CARD_FILENAME, ModelCard, sha256_of, version_key
from service.settings import BatchingSettings, Settings

logger = logging.getLogger(__name__)

#: A labelled image the service ships for self-tests: (28, 28) float32, white on black.
SelfTestDigit = tuple[str, np.ndarray, int]


class PackageError(Exception):
    """A package that cannot be served, with a reason a person can act on."""


@dataclass(frozen=True)
class Fingerprint:
    """Cheap identity of a package on disk, to notice changes without hashing every scan."""

    card: tuple[int, int]
    model: tuple[int, int]

    @classmethod
    def of(cls, package_dir: Path, card: ModelCard | None = None) -> Fingerprint:
        model_file = package_dir / (card.files.torchscript.path if card else "model.pt")
        card_stat = (package_dir / CARD_FILENAME).stat()
        model_stat = model_file.stat() if model_file.exists() else None
        return cls(
            card=(card_stat.st_mtime_ns, card_stat.st_size),
            model=(model_stat.st_mtime_ns, model_stat.st_size) if model_stat else (0, 0),
        )


@dataclass
class ServedModel:
    """A loaded model ready for requests."""

    card: ModelCard
    path: Path
    module: torch.jit.ScriptModule
    device: torch.device
    batching: BatchingSettings
    batcher: Batcher
    fingerprint: Fingerprint


@dataclass(frozen=True)
class FailedPackage:
    name: str
    version: str
    path: Path
    error: str
    fingerprint: Fingerprint | None = None


@dataclass
class ReloadReport:
    loaded: list[tuple[str, str]] = field(default_factory=list)
    unchanged: list[tuple[str, str]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)
    failed: list[FailedPackage] = field(default_factory=list)


def resolve_device(setting: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is a start-up error."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "DIGITS_DEVICE=cuda but torch sees no CUDA device; use DIGITS_DEVICE=auto or cpu"
        )
    return torch.device(setting)


def find_packages(model_dir: Path) -> list[Path]:
    """Folders ``<model_dir>/<name>/<version>/`` that hold a card, in a stable order."""
    found = [card.parent for card in model_dir.glob(f"*/*/{CARD_FILENAME}")]
    return sorted(found, key=lambda p: (p.parent.name, p.name))


def read_verified_card(package_dir: Path) -> ModelCard:
    """The package's card, checked against its folder and the digest of its model file."""
    try:
        card = ModelCard.read(package_dir)
    except ValidationError as exc:
        raise PackageError(f"model card does not validate: {_first_error(exc)}") from exc
    except (OSError, ValueError) as exc:
        raise PackageError(f"model card unreadable: {exc}") from exc
    if (card.name, card.version) != (package_dir.parent.name, package_dir.name):
        raise PackageError(
            f"card names {card.name}/{card.version} but the package sits in "
            f"{package_dir.parent.name}/{package_dir.name}"
        )
    model_file = package_dir / card.files.torchscript.path
    if not model_file.is_file():
        raise PackageError(f"{model_file.name} is missing")
    digest = sha256_of(model_file)
    if digest != card.sha256:
        raise PackageError(
            f"{model_file.name} has sha256 {digest[:12]}... but the card says "
            f"{card.sha256[:12]}...: the file is corrupt or was replaced without its card"
        )
    return card


def load_module(
    package_dir: Path, card: ModelCard, device: torch.device, *, optimize: bool = True
) -> torch.jit.ScriptModule:
    """Load the TorchScript file onto ``device`` in eval mode, optimised for inference
    (:func:`optimized_for_inference`) unless ``optimize`` is false."""
    try:
        with warnings.catch_warnings():
            # TorchScript is the packages' promised format; torch 2.14 calls it deprecated.
            warnings.simplefilter("ignore", FutureWarning)
            module: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]
                str(package_dir / card.files.torchscript.path), map_location=device
            )
    except Exception as exc:  # TorchScript raises RuntimeError and friends for bad archives
        raise PackageError(f"TorchScript file does not load: {exc}".splitlines()[0]) from exc
    module.eval()
    return optimized_for_inference(module, device) if optimize else module


def optimized_for_inference(
    module: torch.jit.ScriptModule, device: torch.device
) -> torch.jit.ScriptModule:
    """``module`` frozen and rewritten for inference on the CPU, or ``module`` unchanged.

    TorchScript's inference pass folds batch norms into convolutions and runs them on
    oneDNN with pre-packed weights: measured on this project's 2-core machine at batch 64,
    LeNet-5's forward pass went from 40 to 17 us an image and the default model's from 342
    to 217, with probabilities within 2e-6 of the plain module's on all 10,000 MNIST test
    digits. Its rewrites are CPU ones; on other devices the module is served as exported.
    A module the pass cannot handle is served as exported too, with a warning.
    """
    if device.type != "cpu":
        return module
    try:
        with warnings.catch_warnings():
            # Deprecated with TorchScript in torch 2.14, like torch.jit.load above.
            warnings.simplefilter("ignore", FutureWarning)
            frozen = torch.jit.freeze(module)
            optimized: torch.jit.ScriptModule = torch.jit.optimize_for_inference(frozen)
    except Exception as exc:  # the passes raise RuntimeError and friends on unusual graphs
        logger.warning("serving the module as exported: inference optimisation failed: %s", exc)
        return module
    return optimized


def probabilities(module: torch.jit.ScriptModule) -> Callable[[torch.Tensor], torch.Tensor]:
    """The batch function the batcher runs: logits (temperature inside) -> probabilities."""

    def predict(batch: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10)
        return torch.softmax(module(batch), dim=1)

    return predict


#: ``torch.backends.mkldnn`` is one process-wide switch: whoever turns it off holds this.
_ONEDNN_SWITCH = threading.Lock()


def without_onednn(
    predict: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``predict`` run with oneDNN convolutions off: PyTorch's own kernels instead.

    For one small image they are faster: oneDNN pays tens of microseconds a convolution to
    set up (LeNet-5, one image: ~160 us with oneDNN, ~80 us without; at batch 64 oneDNN
    is 2.4x faster). The switch is process-wide, so it is flipped under a lock; modules
    rewritten by :func:`optimized_for_inference` call oneDNN directly and ignore it.
    """

    def predict_without_onednn(batch: torch.Tensor) -> torch.Tensor:
        with _ONEDNN_SWITCH:
            # A ContextProp: reading gets the switch, assigning sets it.
            enabled: bool = torch.backends.mkldnn.enabled  # type: ignore[assignment]
            torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
            try:
                return predict(batch)
            finally:
                torch.backends.mkldnn.enabled = enabled  # type: ignore[assignment]

    return predict_without_onednn


@dataclass(frozen=True)
class SingleImagePath:
    """How a batch of one runs: ``predict``, measured at ``ms`` a call."""

    predict: Callable[[torch.Tensor], torch.Tensor]
    ms: float
    kind: str  # "optimised" or "exported, without oneDNN": for the log


def fastest_single_image(
    exported: torch.jit.ScriptModule, optimized: torch.jit.ScriptModule, device: torch.device
) -> SingleImagePath:
    """The quicker way to run one image: the optimised module, or (on the CPU) the exported
    one without oneDNN."""
    candidates = [(probabilities(optimized), "optimised")]
    if device.type == "cpu" and exported is not optimized:
        candidates.append((without_onednn(probabilities(exported)), "exported, without oneDNN"))
    timed = [
        SingleImagePath(predict, single_image_ms(predict, device), kind)
        for predict, kind in candidates
    ]
    return min(timed, key=lambda path: path.ms)


def warm_up(
    module: torch.jit.ScriptModule, device: torch.device, batch_sizes: Iterable[int]
) -> None:
    """Run a few forward passes so the first real request does not pay for lazy set-up
    (TorchScript profiling runs, allocator growth, cuDNN autotuning)."""
    with torch.inference_mode():
        for size in batch_sizes:
            for _ in range(3):
                out = module(torch.zeros(size, 1, 28, 28, device=device))
                if out.shape != (size, 10):
                    raise PackageError(f"model returns shape {tuple(out.shape)}, not ({size}, 10)")


def single_image_ms(
    predict: Callable[[torch.Tensor], torch.Tensor], device: torch.device, runs: int = 7
) -> float:
    """Median milliseconds of a one-image forward pass (after ``runs`` passes to warm up)."""
    image = torch.zeros(1, 1, 28, 28, device=device)
    times = []
    with torch.inference_mode():
        for _ in range(runs):
            predict(image)
        for _ in range(runs):
            started = time.perf_counter()
            predict(image)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - started) * 1000.0)
    return sorted(times)[runs // 2]


def self_test(
    module: torch.jit.ScriptModule, device: torch.device, digits: list[SelfTestDigit]
) -> None:
    """Shipped digits must come back right, or the model does not serve."""
    if not digits:
        return
    batch = torch.from_numpy(np.stack([image for _, image, _ in digits]))[:, None]
    with torch.inference_mode():
        predicted = module(batch.to(device)).argmax(dim=1).tolist()
    wrong = [
        f"{name} read as {got}"
        for (name, _, want), got in zip(digits, predicted, strict=True)
        if got != want
    ]
    if wrong:
        raise PackageError(f"self-test failed on {len(wrong)}/{len(digits)}: {', '.join(wrong)}")


class ModelRepository:
    """Every served model, by name and version; swaps packages in without a restart."""

    def __init__(
        self,
        settings: Settings,
        device: torch.device,
        selftest_digits: list[SelfTestDigit],
        on_batch: Callable[[str, str, BatchReport], None] | None = None,
    ) -> None:
        self._settings = settings
        self._device = device
        self._selftest_digits = selftest_digits
        self._on_batch = on_batch
        self._models: dict[tuple[str, str], ServedModel] = {}
        self._failed: dict[tuple[str, str], FailedPackage] = {}
        self._lock = asyncio.Lock()
        self.loaded_once = False

    # ---- lookup ---------------------------------------------------------------------------

    def served(self) -> list[ServedModel]:
        return sorted(
            self._models.values(), key=lambda m: (m.card.name, version_key(m.card.version))
        )

    def failed(self) -> list[FailedPackage]:
        return sorted(self._failed.values(), key=lambda f: (f.name, f.version))

    def newest_version(self, name: str) -> str | None:
        versions = [v for (n, v) in self._models if n == name]
        return max(versions, key=version_key) if versions else None

    def get(self, name: str | None, version: str | None) -> ServedModel:
        """The model to answer with; 404 with the names that exist when there is none."""
        name = name or self._settings.default_model
        if version is None:
            version = self.newest_version(name) or self._newest_failed_version(name)
        served = self._models.get((name, version)) if version is not None else None
        if served is not None:
            return served
        failed = self._failed.get((name, version)) if version is not None else None
        if failed is not None:
            raise Unavailable(
                f"model {name}/{version} failed to load: {failed.error}",
                code="model_failed",
                retry_after_s=30,
            )
        known = sorted({f"{n}/{v}" for n, v in self._models})
        wanted = f"{name}/{version}" if version else name
        raise NotFound(f"no model {wanted}; serving: {', '.join(known) or 'none'}")

    def _newest_failed_version(self, name: str) -> str | None:
        versions = [v for (n, v) in self._failed if n == name]
        return max(versions, key=version_key) if versions else None

    def default_ready(self) -> bool:
        return self.newest_version(self._settings.default_model) is not None

    # ---- loading and swapping -------------------------------------------------------------

    async def reload(self) -> ReloadReport:
        """Bring what is served in line with the model folder; one reload at a time."""
        async with self._lock:
            report = await self._reload()
            self.loaded_once = True
            return report

    async def _reload(self) -> ReloadReport:
        report = ReloadReport()
        packages = {(p.parent.name, p.name): p for p in find_packages(self._settings.model_dir)}
        for key, path in packages.items():
            current = self._models.get(key)
            if current is not None and _unchanged(path, current.fingerprint):
                report.unchanged.append(key)
                continue
            known_failure = self._failed.get(key)
            if known_failure is not None and _unchanged(path, known_failure.fingerprint):
                report.failed.append(known_failure)  # same files, same verdict: not retried
                continue
            try:
                served = await asyncio.to_thread(self._load, path)
            except PackageError as exc:
                failure = FailedPackage(key[0], key[1], path, str(exc), _fingerprint(path))
                logger.error(
                    "model package failed",
                    extra={"model": f"{key[0]}/{key[1]}", "path": str(path), "reason": str(exc)},
                )
                report.failed.append(failure)
                if current is None:  # an older copy that works keeps serving
                    self._failed[key] = failure
                continue
            await served.batcher.start()
            self._models[key] = served
            self._failed.pop(key, None)
            report.loaded.append(key)
            logger.info(
                "model serving",
                extra={"model": f"{key[0]}/{key[1]}", "device": str(self._device)},
            )
            if current is not None:
                await current.batcher.stop(drain=True, timeout_s=self._settings.shutdown_grace_s)
        for key in [k for k in self._models if k not in packages]:
            gone = self._models.pop(key)
            report.removed.append(key)
            await gone.batcher.stop(drain=True, timeout_s=self._settings.shutdown_grace_s)
        for key in [k for k in self._failed if k not in packages]:
            del self._failed[key]
        return report

    def _load(self, path: Path) -> ServedModel:
        """Read, verify, load, warm and self-test one package (runs in a worker thread)."""
        started = time.perf_counter()
        card = read_verified_card(path)
        fingerprint = Fingerprint.of(path, card)
        exported = load_module(path, card, self._device, optimize=False)
        module = optimized_for_inference(exported, self._device)
        batching = self._settings.batching_for(card.name)
        warm_up(module, self._device, sorted({1, batching.max_batch_size}))
        single = fastest_single_image(exported, module, self._device)
        if self._settings.selftest:
            self_test(module, self._device, self._selftest_digits)
        name, version = card.name, card.version
        on_batch = self._on_batch

        def report(batch: BatchReport) -> None:
            if on_batch is not None:
                on_batch(name, version, batch)

        batcher = Batcher(
            probabilities(module),
            name=f"{name}/{version}",
            max_batch_size=batching.max_batch_size,
            max_wait_ms=batching.max_wait_ms,
            queue_size=batching.queue_size,
            device=self._device,
            on_batch=report,
            lone_on_loop=single.ms < self._settings.lone_on_loop_below_ms,
            predict_one=single.predict,
        )
        logger.info(
            "model loaded",
            extra={
                "model": f"{name}/{version}",
                "seconds": round(time.perf_counter() - started, 3),
                "single_image_ms": round(single.ms, 3),
                "single_image_path": single.kind,
            },
        )
        return ServedModel(card, path, module, self._device, batching, batcher, fingerprint)

    async def close(self) -> None:
        """Answer everything queued, then stop every batcher."""
        async with self._lock:
            await asyncio.gather(
                *(
                    m.batcher.stop(drain=True, timeout_s=self._settings.shutdown_grace_s)
                    for m in self._models.values()
                )
            )


def _fingerprint(path: Path) -> Fingerprint | None:
    try:
        return Fingerprint.of(path, _card_or_none(path))
    except OSError:
        return None


def _card_or_none(path: Path) -> ModelCard | None:
    try:
        return ModelCard.read(path)
    except (OSError, ValueError):
        return None


def _unchanged(path: Path, fingerprint: Fingerprint | None) -> bool:
    return fingerprint is not None and _fingerprint(path) == fingerprint


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "card"
    return f"{where}: {err['msg']} ({exc.error_count()} error(s) in all)"
