"""The realistic mix: its corpus and manifest, the per-kind preprocess table on it, and (slow,
with wrk) the decode-only floor answering and ``post_mix.lua`` rotating through the bodies."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from benchmarks.digit_image import BENCHMARK_PNG, CONTENT_TYPE
from benchmarks.image_kinds import KINDS, Digit, content_type
from benchmarks.inprocess import kinds_table, time_kinds
from benchmarks.load import decode_only
from benchmarks.mix import ALL_MIXED, GROUPS, by_workload, read_manifest, write_mix
from benchmarks.reference.ceiling import ANSWER
from benchmarks.servers import running
from benchmarks.workloads import mix_workloads
from benchmarks.wrk import run_wrk

PER_KIND = 2


@pytest.fixture(scope="module")
def mix(digits: tuple[Digit, NDArray[np.uint8]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mix")
    write_mix(folder, *digits, per_kind=PER_KIND)
    return folder


def test_the_mix_has_every_kind_from_distinct_digits_with_a_manifest(
    mix: Path, digits: tuple[Digit, NDArray[np.uint8]]
) -> None:
    entries = read_manifest(mix)
    assert len(entries) == PER_KIND * len(KINDS)
    assert [e.kind for e in entries[: len(KINDS)]] == list(KINDS)  # round-robin by kind
    indices = [int(e.file.rsplit("-", 1)[1].split(".")[0]) for e in entries]
    assert len(set(indices)) == len(entries)  # no digit twice
    for entry, index in zip(entries, indices, strict=True):
        body = (mix / entry.file).read_bytes()
        assert entry.content_type == content_type(body)
        assert entry.label == digits[1][index]
        assert entry.kind in GROUPS[entry.group]
    assert {e.group for e in entries} == set(GROUPS)


def test_the_mix_is_the_same_each_time(
    mix: Path, digits: tuple[Digit, NDArray[np.uint8]], tmp_path: Path
) -> None:
    again = write_mix(tmp_path, *digits, per_kind=PER_KIND)
    assert again == read_manifest(mix)
    assert all((tmp_path / e.file).read_bytes() == (mix / e.file).read_bytes() for e in again)


def test_workloads_are_all_mixed_then_each_group(mix: Path) -> None:
    entries = read_manifest(mix)
    chosen = by_workload(entries)
    assert list(chosen) == [ALL_MIXED, *GROUPS]
    assert chosen[ALL_MIXED] == entries
    assert sum(len(chosen[g]) for g in GROUPS) == len(entries)
    workloads = mix_workloads(mix, entries)
    assert [w.name for w in workloads] == list(chosen)
    assert workloads[0].bodies[0] == (mix / entries[0].file, entries[0].content_type)


def test_preprocess_is_timed_per_kind_and_for_the_whole_mix(mix: Path) -> None:
    rows = time_kinds(mix, read_manifest(mix), repeats=1)
    assert [r.kind for r in rows] == [*KINDS, ALL_MIXED]
    assert rows[-1].bodies == PER_KIND * len(KINDS)
    assert all(r.preprocess_median_us > 0 and r.decode_median_us > 0 for r in rows)
    assert "| phone_photo_jpeg | 2 |" in kinds_table(rows)


@pytest.mark.slow
def test_the_decode_only_floor_decodes_and_answers_the_ceilings_constant(tmp_path: Path) -> None:
    with running(decode_only(), cpus=None, log_path=tmp_path / "decode-only.log") as server:
        good = urllib.request.Request(
            server.predict_url, data=BENCHMARK_PNG.read_bytes(), method="POST"
        )
        with urllib.request.urlopen(good, timeout=5) as reply:
            assert reply.read() == ANSWER
        bad = urllib.request.Request(server.predict_url, data=b"not an image", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=5)
        assert refused.value.code == 400  # it decoded: a body Pillow cannot read is refused


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_rotates_through_the_bodies_of_a_list(mix: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not an image")
    # Two images the floor decodes, and one it cannot: a third of the answers must be 400s.
    bodies = [(BENCHMARK_PNG, CONTENT_TYPE), (junk, "image/png")]
    entry = next(e for e in read_manifest(mix) if e.kind == "phone_photo_jpeg")  # a large body
    bodies.insert(1, (mix / entry.file, entry.content_type))
    with running(decode_only(), cpus=None, log_path=tmp_path / "decode-only.log") as server:
        result = run_wrk(server.predict_url, body=bodies, concurrency=3, duration_s=1, cpus=None)
    assert set(result.statuses) == {200, 400}
    assert result.statuses[400] / result.requests == pytest.approx(1 / 3, abs=0.05)
    assert sum(result.socket_errors.values()) == 0
