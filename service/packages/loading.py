"""A verified package -> a :class:`LoadedModel`: its TorchScript module on the device,
optimised for inference, warmed up, with the fastest way to run one image, and self-tested
on every forward path a request can take.

Loading reads, hashes and runs the model: it is slow and blocking, so callers run it in a
worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from service.packages.card import ModelCard
from service.packages.discovery import Fingerprint
from service.packages.verification import PackageError, read_verified_card

logger = logging.getLogger(__name__)

Predict = Callable[[torch.Tensor], torch.Tensor]
"""``(B, 1, 28, 28)`` float32 on the device -> ``(B, 10)`` probabilities."""


@dataclass(frozen=True)
class SelfTestDigit:
    """A labelled image the service ships for self-tests: (28, 28) float32, white on black."""

    name: str
    image: npt.NDArray[np.float32]
    digit: int


@dataclass(frozen=True)
class LoadedModel:
    """A package ready to serve: the batch function and the one-image function."""

    card: ModelCard
    path: Path
    fingerprint: Fingerprint | None
    device: torch.device
    predict: Predict
    #: The quicker way to run a batch of one (see :func:`fastest_single_image`).
    predict_one: Predict
    single_image_ms: float


def resolve_device(setting: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is a start-up error."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "DIGITS_DEVICE=cuda but torch sees no CUDA device; use DIGITS_DEVICE=auto or cpu"
        )
    return torch.device(setting)


def load_package(
    path: Path,
    device: torch.device,
    *,
    warm_batch_sizes: Iterable[int],
    selftest_digits: Sequence[SelfTestDigit],
) -> LoadedModel:
    """Verify, load, optimise, warm and self-test one package; raises :class:`PackageError`."""
    started = time.perf_counter()
    # Taken before the files are read: a change during loading is seen at the next scan.
    fingerprint = Fingerprint.of(path)
    card = read_verified_card(path)
    exported = load_module(path, card, device)
    module = optimized_for_inference(exported, device)
    warm_up(module, device, warm_batch_sizes)
    predict = probabilities(module)
    single = fastest_single_image(predict, exported, module, device)
    self_test({"batched": predict, single.kind: single.predict}, device, selftest_digits)
    logger.info(
        "model loaded",
        extra={
            "model": f"{card.name}/{card.version}",
            "seconds": round(time.perf_counter() - started, 3),
            "single_image_ms": round(single.ms, 3),
            "single_image_path": single.kind,
        },
    )
    return LoadedModel(card, path, fingerprint, device, predict, single.predict, single.ms)


def load_module(package_dir: Path, card: ModelCard, device: torch.device) -> torch.jit.ScriptModule:
    """The package's TorchScript file on ``device``, in eval mode, as exported."""
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
    return module


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


def probabilities(module: torch.jit.ScriptModule) -> Predict:
    """The batch function: logits (temperature inside) -> probabilities."""

    def predict(batch: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10)
        return torch.softmax(module(batch), dim=1)

    return predict


#: ``torch.backends.mkldnn`` is one process-wide switch: whoever turns it off holds this.
_ONEDNN_SWITCH = threading.Lock()


def without_onednn(predict: Predict) -> Predict:
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

    predict: Predict
    ms: float
    kind: str  # "optimised" or "exported, without oneDNN": for the log and the self-test


def fastest_single_image(
    batched: Predict,
    exported: torch.jit.ScriptModule,
    optimized: torch.jit.ScriptModule,
    device: torch.device,
) -> SingleImagePath:
    """The quicker way to run one image: the batch function (the optimised module), or (on
    the CPU) the exported module without oneDNN. Timed here, once, on this machine."""
    candidates = [(batched, "optimised")]
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


def single_image_ms(predict: Predict, device: torch.device, runs: int = 7) -> float:
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
    paths: dict[str, Predict], device: torch.device, digits: Sequence[SelfTestDigit]
) -> None:
    """Every shipped digit must come back right on every forward path (``name -> predict``)
    a request can take: all of them as one batch through the batch path, and each alone
    through the one-image path. Otherwise the model does not serve."""
    if not digits:
        return
    batch = torch.from_numpy(np.stack([d.image for d in digits]))[:, None].to(device)
    wrong: list[str] = []
    with torch.inference_mode():
        for kind, predict in paths.items():
            if kind == "batched":
                predicted = predict(batch).argmax(dim=1).tolist()
            else:
                predicted = [int(predict(batch[i : i + 1]).argmax()) for i in range(len(digits))]
            wrong += [
                f"{d.name} read as {got} ({kind})"
                for d, got in zip(digits, predicted, strict=True)
                if got != d.digit
            ]
    if wrong:
        raise PackageError(f"self-test failed on {len(wrong)}: {', '.join(wrong)}")
