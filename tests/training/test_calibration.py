from __future__ import annotations

import math

import pytest
import torch

from training.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)


def _two_class_logits(confidences: list[float]) -> torch.Tensor:
    """Logits whose softmax puts probability ``c`` on class 0 for each ``c``."""
    p = torch.tensor(confidences, dtype=torch.float64)
    return torch.stack([p.log(), (1 - p).log()], dim=1)


def test_ece_of_a_hand_computed_case() -> None:
    # Bin (0.8667, 0.9333]: two digits at 0.9, both right -> |1.0 - 0.9| = 0.1, weight 1/2.
    # Bin (0.5333, 0.6]: two digits at 0.6, one right -> |0.5 - 0.6| = 0.1, weight 1/2.
    logits = _two_class_logits([0.9, 0.9, 0.6, 0.6])
    labels = torch.tensor([0, 0, 0, 1])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.1)


def test_ece_is_zero_when_confidence_equals_accuracy() -> None:
    # Ten digits at 0.7 confidence of which seven are right.
    logits = _two_class_logits([0.7] * 10)
    labels = torch.tensor([0] * 7 + [1] * 3)
    assert expected_calibration_error(logits, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_certain_predictions_is_the_error_rate() -> None:
    # Confidence 1.0 falls in the last bin; 3 of 4 right -> ECE 0.25.
    logits = torch.tensor([[50.0, 0.0]] * 4)
    labels = torch.tensor([0, 0, 0, 1])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.25)


def _overconfident_example(true_temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(z); the model reports z * T, i.e. it is over-confident."""
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(20_000, 10, generator=generator) * 2.0
    labels = torch.multinomial(z.softmax(dim=1), 1, generator=generator).squeeze(1)
    return z * true_temperature, labels


def test_temperature_scaling_recovers_the_temperature_and_lowers_nll() -> None:
    logits, labels = _overconfident_example(true_temperature=3.0)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.05)
    before = negative_log_likelihood(logits, labels)
    after = negative_log_likelihood(logits / temperature, labels)
    assert after < before - 0.1
    assert expected_calibration_error(logits / temperature, labels) < 0.5 * (
        expected_calibration_error(logits, labels)
    )


def test_temperature_of_calibrated_logits_is_about_one() -> None:
    logits, labels = _overconfident_example(true_temperature=1.0)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.05)


def test_temperature_scaling_never_changes_the_prediction() -> None:
    logits, labels = _overconfident_example(true_temperature=2.0)
    temperature = fit_temperature(logits, labels)
    assert torch.equal((logits / temperature).argmax(dim=1), logits.argmax(dim=1))


def test_nll_matches_its_definition() -> None:
    logits = _two_class_logits([0.8, 0.25])
    labels = torch.tensor([0, 0])
    assert negative_log_likelihood(logits, labels) == pytest.approx(
        -(math.log(0.8) + math.log(0.25)) / 2
    )
