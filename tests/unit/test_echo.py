"""The controller's echo: bounded whatever the log's size, and it says what it skipped (issue 9)."""

from __future__ import annotations

import threading

from mlbatch.core.bucket import FileBucket
from mlbatch.run.echo import MAX_LINE, BoundedEcho, LogFollower, echo_log_after


def test_a_slow_terminal_skips_lines_and_says_how_many():
    gate = threading.Event()
    shown: list[str] = []

    def slow(line: str) -> None:
        gate.wait()
        shown.append(line)

    echo = BoundedEcho(slow)
    for i in range(10_000):
        echo.line(f"line {i}")
    gate.set()
    echo.close()
    notes = [line for line in shown if "not shown here" in line]
    skipped = sum(int(note.split()[1]) for note in notes)
    assert notes and skipped + len(shown) - len(notes) == 10_000
    assert shown[-1] == "line 9999" or "not shown here" in shown[-1]


def test_following_a_log_by_ranges_cuts_endless_lines(tmp_path):
    bucket = FileBucket(tmp_path)
    bucket.write("r/log", b"a\n" + b"L" * (3 * 1024 * 1024) + b"\nb\xff\n")
    shown: list[str] = []
    echo = BoundedEcho(shown.append)
    follower = LogFollower()
    follower.follow(bucket, ["r/log"], echo)
    bucket.append("r/log", b"c\rprogress\n", at=bucket.size("r/log"))
    follower.follow(bucket, ["r/log"], echo)
    echo.close()
    assert shown[0] == "a" and shown[-2:] == ["b\ufffd", "c\rprogress"]
    assert all(len(line) < MAX_LINE + 100 for line in shown)


def test_the_end_of_the_log_after_the_last_line_shown(tmp_path):
    bucket = FileBucket(tmp_path)
    bucket.write("r/log", b"".join(b"line %d\n" % i for i in range(200_000)))
    shown: list[str] = []
    echo = BoundedEcho(shown.append)
    echo_log_after(bucket, "r/log", "line 199997", echo)
    echo.close()
    assert shown == ["line 199998", "line 199999"]
