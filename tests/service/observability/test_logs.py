"""Log output: buffered, yet warnings at once and nothing lost at close."""

from __future__ import annotations

import logging
import os
import select
from collections.abc import Iterator

import pytest

from service.observability.logs import BufferedStderrHandler, JsonFormatter


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def available(fd: int) -> str:
    try:
        return os.read(fd, 1 << 20).decode()
    except BlockingIOError:
        return ""


def test_info_waits_for_the_flush_warnings_do_not_and_close_loses_nothing(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    handler = BufferedStderrHandler(interval_s=3600, fd=write_end)
    handler.setFormatter(JsonFormatter())
    logger = logging.Logger("test.buffered")
    logger.addHandler(handler)
    logger.info("request", extra={"status": 200})
    assert available(read_end) == ""  # buffered: no write per access line
    logger.warning("something failed")
    written = available(read_end).splitlines()
    assert [line.count('"message"') for line in written] == [1, 1]
    assert '"status": 200' in written[0] and "something failed" in written[1]
    logger.info("last words")
    handler.close()
    assert "last words" in available(read_end)


def test_the_flush_thread_writes_buffered_lines_out(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    handler = BufferedStderrHandler(interval_s=0.01, fd=write_end)
    logger = logging.Logger("test.buffered")
    logger.addHandler(handler)
    try:
        logger.info("soon")
        readable, _, _ = select.select([read_end], [], [], 10.0)  # wakes when the line lands
        assert readable and "soon" in available(read_end)
    finally:
        handler.close()
