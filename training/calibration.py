"""Confidence calibration: temperature scaling and the expected calibration error.

Temperature scaling (Guo et al. 2017) divides the logits by one scalar ``T`` fitted on held-out
data to minimise the negative log-likelihood; it changes confidences, never the predicted class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

ECE_BINS = 15


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean NLL of ``labels`` (N,) under ``softmax(logits)`` (N, C)."""
    return float(F.cross_entropy(logits.double(), labels))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The ``T > 0`` minimising the NLL of ``logits / T``.

    Optimises ``log T`` (so ``T`` stays positive) with L-BFGS on the held-out ``logits`` (N, C),
    in float64 since the objective is a smooth 1-D function and precision is cheap here.
    """
    logits = logits.detach().double()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return float(log_t.detach().exp())


def expected_calibration_error(
    logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS
) -> float:
    """ECE with ``bins`` equal-width confidence bins over (0, 1].

    The weighted mean over bins of |accuracy - mean confidence|, weighted by the fraction of
    samples in the bin; confidence is the top softmax probability of ``logits`` (N, C).
    """
    probabilities = logits.detach().double().softmax(dim=1)
    confidence, predicted = probabilities.max(dim=1)  # (N,), (N,)
    correct = (predicted == labels).double()
    # Bin b holds confidences in (b/bins, (b+1)/bins]; ceil maps exactly 1.0 to the last bin.
    bin_index = (confidence * bins).ceil().long().clamp(1, bins) - 1
    hits = torch.zeros(bins, dtype=torch.float64).index_add_(0, bin_index, correct)
    confidence_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, bin_index, confidence)
    gaps = (hits - confidence_sum).abs()  # per bin: count * |accuracy - confidence|
    return float(gaps.sum() / labels.numel())
