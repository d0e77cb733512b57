"""The load benchmark's parts: wrk's report, Prometheus scrapes, the Markdown and its targets,
and (slow) wrk driving a real server through the Lua script."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.digit_image import BENCHMARK_PNG, CONTENT_TYPE
from benchmarks.inprocess import InProcessResult
from benchmarks.load import ceiling
from benchmarks.measurements import CpuUse, LoadPoint, MemoryCheck, Run
from benchmarks.mix import ALL_MIXED, GROUPS
from benchmarks.prometheus_text import mean_batch_size, requests_answered, sample_sum
from benchmarks.report import interpolated_throughput, render, targets
from benchmarks.servers import running
from benchmarks.workloads import EXACT_MNIST, OFF_CENTRE_7
from benchmarks.wrk import LoadResult, parse_result, run_wrk
from service.inference.batcher import BatchReport
from service.observability.metrics import ServiceMetrics

WRK_LINE = (
    '{"duration_us": 2000000, "requests": 9000, "statuses": {"200": 8990, "503": 10}, '
    '"socket_errors": {"connect": 0, "read": 1, "write": 0, "timeout": 0}, '
    '"latency_us": {"mean": 7100.5, "max": 30000, "p50": 6000, "p90": 9000, "p99": 21000}}'
)


def test_wrk_report_is_parsed() -> None:
    result = parse_result(WRK_LINE, concurrency=64)
    assert result.requests_per_s == pytest.approx(4500.0)
    assert result.latency_ms["p99"] == pytest.approx(21.0)
    assert result.statuses == {200: 8990, 503: 10}
    assert result.errors == 11
    assert result.describe_errors() == "503: 10, read: 1"


def test_mean_batch_size_and_requests_come_from_the_service_metrics() -> None:
    metrics = ServiceMetrics()
    before = metrics.render().decode()
    for size in (4, 8):
        metrics.observe_batch("lenet5", "1", BatchReport(size, (0.001,) * size, 0.002, 0, 0, 0))
    metrics.observe_request("/predict", "lenet5", "1", 200, 0.003)
    after = metrics.render().decode()
    assert mean_batch_size(before, after) == pytest.approx(6.0)
    assert mean_batch_size(after, after) is None
    assert requests_answered(after) == 1
    assert sample_sum(after, "digits_batch_size_count") == 2  # not ..._count_created


def test_label_values_with_spaces_are_read() -> None:
    text = 'digits_batch_size_sum{model="a b",version="1"} 3.0\ndigits_batch_size_sum 2.0\n'
    assert sample_sum(text, "digits_batch_size_sum") == 5.0


def rows(*pairs: tuple[int, float]) -> list[InProcessResult]:
    return [InProcessResult("default", b, 2 * r, r, 40.0) for b, r in pairs]


def test_in_process_throughput_is_interpolated_in_log_batch_size() -> None:
    table = rows((1, 100.0), (4, 300.0), (16, 500.0))
    assert interpolated_throughput(table, 2.0) == pytest.approx(200.0)
    assert interpolated_throughput(table, 0.5) == 100.0
    assert interpolated_throughput(table, 64.0) == 500.0


def point(
    server: str,
    concurrency: int,
    rate: float,
    p99: float = 5.0,
    workload: str = OFF_CENTRE_7.name,
    pinned: bool = True,
    **kw: object,
) -> LoadPoint:
    statuses = kw.pop("statuses", {200: int(rate)})
    assert isinstance(statuses, dict)
    result = LoadResult(
        concurrency,
        1.0,
        int(rate),
        statuses,
        {},
        {"mean": 1, "max": 9, "p50": 1, "p90": 2, "p99": p99},
    )
    mean_batch = kw.pop("mean_batch", None)
    assert mean_batch is None or isinstance(mean_batch, float)
    return LoadPoint(server, workload, pinned, result, (rate,), mean_batch, CpuUse(0.9, 0.1))


def sample_run() -> Run:
    run = Run(environment={"cpu": "test"}, commands=["python -m service"])
    run.inprocess = rows((1, 100.0), (16, 500.0))
    run.points = [
        point("ceiling", 64, 8000.0),
        point("naive (lenet5)", 64, 1900.0),
        point("litserve (lenet5)", 64, 1100.0),
        point("service (lenet5)", 64, 4100.0, p99=31.0),
        point("service (default)", 64, 420.0, workload=EXACT_MNIST.name, mean_batch=16.0),
        point("service (lenet5, queue 128)", 256, 5000.0, statuses={200: 4000, 503: 1000}),
    ]
    run.memory = [MemoryCheck("service (lenet5)", 100 * 2**20, 105 * 2**20, 100_000)]
    return run


def test_targets_are_judged_from_the_run() -> None:
    judged = {t.what: t.met for t in targets(sample_run())}
    assert judged["c=64: >= 0.5x the ceiling"] is True
    assert judged["c=64: >= 4x LitServe"] is False  # 4100 / 1100 = 3.7
    assert judged["c=64: p99 <= 30 ms"] is False
    assert (
        judged["default model c=64: >= 0.8x its in-process throughput at the service's batch size"]
        is True
    )
    assert any(what.startswith("memory") and met for what, met in judged.items())


def test_report_holds_every_section() -> None:
    report = render(sample_run())
    for heading in (
        "## Set-up",
        "## The realistic mix",
        "### Per group",
        "### Preprocessing per kind",
        "## LeNet-5, a 28x28 PNG",
        "## In-process",
        "## Over HTTP, unpinned",
        "## Memory",
        "## Targets",
    ):
        assert heading in report
    assert "| service (lenet5) | off-centre 7 | 64 | 4,100 | 0.51 | 2.16 |" in report


def mix_run() -> Run:
    run = Run(environment={}, commands=[])
    run.workload_bodies = {ALL_MIXED: 400, **{group: 40 for group in GROUPS}}
    run.workload_bodies["paper, scanned or photographed"] = 200
    run.workload_bodies["canvas exports"] = 80
    run.points = [
        point("decode-only", 16, 1000.0, workload=ALL_MIXED),
        point("service (default)", 16, 400.0, workload=ALL_MIXED),
        point("naive (default)", 16, 250.0, workload=ALL_MIXED),
        point("service (default)", 16, 700.0, workload=ALL_MIXED, pinned=False),
        point("decode-only", 16, 2000.0, workload="canvas exports"),
        point("service (default)", 16, 500.0, workload="canvas exports"),
    ]
    return run


def test_mix_rows_are_given_as_ratios_to_the_decode_only_floor() -> None:
    report = render(mix_run())
    assert "paper, scanned or photographed 50%" in report  # the shares of "all mixed"
    assert "| service (default) | CPU 0 | 400 |" in report
    assert report.count("| 0.40 |") == 1  # 400 / 1000, pinned
    assert "| service (default) | both CPUs | 700 |" in report
    assert "| 0.70 |" in report  # unpinned, to the pinned floor
    assert "| canvas exports | 20% | service (default) | 500 |" in report
    assert "| 0.25 |" in report  # 500 / 2000: a group's rows to the floor on that group


def test_mix_target_is_the_unpinned_gain() -> None:
    judged = {t.what: t for t in targets(mix_run())}
    gain = judged["mix c=16: unpinned >= 1.6x pinned"]
    assert (gain.measured, gain.met) == ("700 / 400 = 1.75x", True)
    assert judged["mix c=16: no errors"].met is True


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_drives_a_real_server_through_the_lua_script(tmp_path: Path) -> None:
    with running(ceiling(), cpus=None, log_path=tmp_path / "ceiling.log") as server:
        result = run_wrk(
            server.predict_url,
            body=BENCHMARK_PNG,
            content_type=CONTENT_TYPE,
            concurrency=4,
            duration_s=1.0,
            cpus=None,
        )
        assert server.resident_bytes() > 0
        assert any(t.main for t in server.thread_cpu())
    assert result.requests > 0
    assert result.statuses == {200: result.requests}
    assert result.latency_ms["p50"] > 0
