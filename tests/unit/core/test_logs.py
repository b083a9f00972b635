"""setup_logging: records leave through a QueueHandler and are written by a listener thread,
in the configured format, with tracebacks kept; stop_logging writes everything queued."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator

import pytest

from server.core import logs


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        logs.stop_logging()
        root.handlers[:] = handlers
        root.setLevel(level)


def test_json_records_are_written_off_the_calling_thread(
    restore_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup_logging("INFO", "json")
    writers: list[str] = []

    class Spy(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            writers.append(threading.current_thread().name)
            return True

    assert logs._listener is not None
    logs._listener.handlers[0].addFilter(Spy())
    log = logging.getLogger("imprint.test")
    log.info("hello %s", "world", extra={"mac": "02:00:5e:00:01:01"})
    log.debug("not emitted")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    logs.stop_logging()
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [(x["level"], x["msg"]) for x in lines] == [("INFO", "hello world"), ("ERROR", "failed")]
    assert lines[0]["mac"] == "02:00:5e:00:01:01"
    assert "ValueError: boom" in lines[1]["exc"]
    assert writers and threading.current_thread().name not in writers


def test_human_format_keeps_the_traceback(
    restore_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup_logging("WARNING", "human")
    log = logging.getLogger("imprint.test")
    log.info("below the level")
    try:
        raise KeyError("k")
    except KeyError:
        log.exception("lookup failed")
    logs.stop_logging()
    err = capsys.readouterr().err
    assert "below the level" not in err
    assert "ERROR   imprint.test: lookup failed" in err and "KeyError: 'k'" in err


def test_a_full_queue_drops_and_counts_instead_of_blocking(restore_root: None) -> None:
    logs.setup_logging("INFO", "human")
    logs.stop_logging()  # no writer: the queue only fills
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logs._QueueHandler)
    for i in range(logs.QUEUE_SIZE + 5):
        logging.getLogger("imprint.test").info("line %d", i)
    assert handler.dropped == 5


def test_reconfiguring_keeps_every_record_in_the_format_it_was_logged_in(
    restore_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = logging.getLogger("imprint.test")
    logs.setup_logging("INFO", "human")
    for i in range(200):
        log.info("before %d", i)
    logs.setup_logging("INFO", "json")  # what SIGHUP does when [log] format changes
    log.info("after")
    logs.stop_logging()
    lines = capsys.readouterr().err.splitlines()
    human = [x for x in lines if "INFO    imprint.test: before" in x]
    assert len(human) == 200
    assert [json.loads(x)["msg"] for x in lines if x.startswith("{")] == ["after"]
    assert len(lines) == 201


def test_a_record_logged_while_reconfiguring_waits_for_the_new_writer(
    restore_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup_logging("INFO", "human")
    old = logs._listener
    assert old is not None
    stop = old.stop

    def stop_then_log() -> None:  # a record from another thread between the swap and the stop
        logging.getLogger("imprint.test").info("in between")
        stop()

    old.stop = stop_then_log  # type: ignore[method-assign]
    logs.setup_logging("INFO", "json")
    logs.stop_logging()
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(x)["msg"] for x in lines] == ["in between"]
