"""Reading the few samples the benchmark needs from a Prometheus text exposition."""

from __future__ import annotations


def sample_sum(exposition: str, name: str) -> float:
    """Sum of every sample of metric ``name`` (all label sets), e.g. ``digits_batch_size_sum``.

    Exact name match: ``digits_batch_size_sum`` does not also count ``..._sum_created``.
    """
    total = 0.0
    for line in exposition.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if rest.startswith("{"):  # label values may hold spaces: skip to the closing brace
            rest = rest[rest.rindex("}") + 1 :]
        if rest.startswith(" "):
            total += float(rest.split()[0])
    return total


def mean_batch_size(before: str, after: str) -> float | None:
    """Mean images per forward pass between two scrapes; ``None`` when no batch ran."""
    batches = sample_sum(after, "digits_batch_size_count") - sample_sum(
        before, "digits_batch_size_count"
    )
    if batches <= 0:
        return None
    images = sample_sum(after, "digits_batch_size_sum") - sample_sum(
        before, "digits_batch_size_sum"
    )
    return images / batches


def requests_answered(exposition: str) -> int:
    """HTTP requests the service has answered (every route and status)."""
    return int(sample_sum(exposition, "digits_requests_total"))
