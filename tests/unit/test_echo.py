"""The controller's echo: bounded whatever the log's size, and it says what it skipped (issue 9)."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import subprocess
import tempfile
import threading
import tty

from mlbatch.core import runs
from mlbatch.core.bucket import FileBucket
from mlbatch.run.echo import MAX_LINE, BoundedEcho, LogFollower, echo_log_after
from tests.conftest import ROOT
from tests.integration.helpers import INVOKE
from tests.support.memory_provider import succeed

CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


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
    assert shown[0] == "a" and shown[-2:] == ["b\ufffd", "c^Mprogress"]
    assert all(len(line) < MAX_LINE + 100 for line in shown)


def test_the_end_of_the_log_after_the_last_line_shown(tmp_path):
    bucket = FileBucket(tmp_path)
    bucket.write("r/log", b"".join(b"line %d\n" % i for i in range(200_000)))
    shown: list[str] = []
    echo = BoundedEcho(shown.append)
    echo_log_after(bucket, "r/log", "line 199997", echo)
    echo.close()
    assert shown == ["line 199998", "line 199999"]


# --- issue 16, item 6: job output cannot drive the operator's terminal ------------------------

# What a job could print to act on the terminal that shows it: a window title (OSC, ended by
# BEL or by ST), clearing the screen, a line overwritten by CR, a bell, C1 controls (CSI as
# one character), backspaces over text, DEL.
HOSTILE = "\x1b]0;owned\x07 \x1b]2;t2\x1b\\ \x1b[2J\x1b[31mred\x1b[0m safe\rfake \x07 \x9b2J \x85 a\x08b \x7f\ttab"
SHOWN = "^[]0;owned^G ^[]2;t2^[\\ ^[[2J^[[31mred^[[0m safe^Mfake ^G M-^[2J M-^E a^Hb ^?\ttab"


def test_control_characters_are_made_visible_not_sent_to_the_terminal(capsys):
    from mlbatch import ui

    echo = BoundedEcho(ui.echo)
    echo.line(HOSTILE)
    echo.close()
    out = capsys.readouterr().out
    assert out == f"  │ {SHOWN}\n".expandtabs(8)  # rich expands the tab


def test_a_runs_console_and_log_echo_visibly_while_the_bucket_keeps_the_raw_bytes(controller, provider, bucket, lines):
    from mlbatch.core import runs
    from mlbatch.run.controller import RunRequest
    from tests.unit.conftest import VERSION

    provider.script(succeed(HOSTILE))
    outcome = controller.run(RunRequest("sleep", VERSION))
    assert SHOWN in lines and not any(CONTROL.search(line) for line in lines)
    assert HOSTILE.encode() in bucket.read(runs.attempt_key(outcome.run_id, 1, runs.ATTEMPT_LOG))


def test_a_marker_line_printed_by_the_job_reaches_the_message_spelled_out(controller, provider, lines):
    from mlbatch.providers.base import STOPPED
    from mlbatch.run.controller import RunRequest
    from tests.support.memory_provider import Behaviour
    from tests.unit.conftest import VERSION

    provider.script(Behaviour(None, lines=(f"{runs.AGENT_FAILED_MARKER}: \x1b]0;owned\x07",), end_state=STOPPED))
    outcome = controller.run(RunRequest("sleep", VERSION))
    assert (
        outcome.record.status == runs.INFRA_FAILED
        and "its console said: MLBATCH-AGENT-FAILED: ^[]0;owned^G" in outcome.record.message
    )
    assert not any(CONTROL.search(line) for line in lines)


def test_following_a_log_from_the_bucket_shows_it_visibly(tmp_path):
    bucket = FileBucket(tmp_path)
    bucket.write("r/log", HOSTILE.encode() + b"\n\xff\x1b[?1049h\n")
    shown: list[str] = []
    echo = BoundedEcho(shown.append)
    LogFollower().follow(bucket, ["r/log"], echo)
    echo_log_after(bucket, "r/log", "", echo)  # the tail read back after a console that ended early
    echo.close()
    assert shown == [SHOWN, "\ufffd^[[?1049h"] * 2


def _logs_cli(bucket_uri: str, run_id: str, stdout) -> subprocess.Popen:
    env = {**os.environ, "INVOKE_MLBATCH_PROFILES_LOCAL_BUCKET": bucket_uri}
    return subprocess.Popen([INVOKE, "logs", run_id], cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.PIPE)


def test_invoke_logs_escapes_on_a_terminal_and_keeps_the_exact_bytes_in_a_file(controller, provider, bucket):
    from mlbatch.run.controller import RunRequest
    from tests.unit.conftest import VERSION

    provider.script(succeed(HOSTILE))
    run_id = controller.run(RunRequest("sleep", VERSION)).run_id
    key = runs.attempt_key(run_id, 1, runs.ATTEMPT_LOG)
    bucket.append(key, b"not utf-8: \xff\n", at=bucket.size(key))
    uri = bucket.uri
    # a terminal: a pty in raw mode, so what the program writes is what we read
    master, slave = pty.openpty()
    tty.setraw(slave)
    process = _logs_cli(uri, run_id, slave)
    os.close(slave)
    seen = b""
    with contextlib.suppress(OSError):  # EIO once the program exited and closed the pty
        while chunk := os.read(master, 65536):
            seen += chunk
    os.close(master)
    assert process.wait(timeout=120) == 0, process.stderr.read()
    text = seen.decode()
    assert SHOWN in text and "not utf-8: \ufffd" in text and not CONTROL.search(text.replace("\n", "").replace("\t", ""))
    # a file: the log's bytes as they are, invalid UTF-8 and escape sequences included
    with tempfile.TemporaryFile() as out:
        assert _logs_cli(uri, run_id, out).wait(timeout=120) == 0
        out.seek(0)
        data = out.read()
    log = bucket.read(key)
    assert data == b"===== attempt 1 =====\n" + log and HOSTILE.encode() in data and b"not utf-8: \xff" in data


def test_a_text_only_stream_gets_the_visible_form():
    import io

    from mlbatch.run.echo import show_log

    out = io.StringIO()
    show_log(b"\x1b]0;owned\x07 ok\n\xff\n", out)
    assert out.getvalue() == "^[]0;owned^G ok\n\ufffd\n"
