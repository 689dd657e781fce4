"""`scripts/notify-failure` (issue 16, item 6c): the failure notice is real JSON whatever the
tag holds, and the webhook URL, a secret, is on no process's command line nor in any output.

The script runs for real against a webhook receiver on 127.0.0.1, which, while it holds the
request, reads every process's command line from /proc (what `ps` shows every user)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.loopback import JsonServer

SCRIPT = ROOT / "scripts" / "notify-failure"
HOSTILE_TAG = 'v1.0.0"}, "injected": "\\" \\\\ \n\r\t $(id) `id` \'quoted\' \u00e9\u2028'


def command_lines() -> list[bytes]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes())
            except OSError:  # gone meanwhile, or not ours to read
                continue
    return lines


class Webhook:
    """A chat webhook on loopback: records each request, and the command lines seen while it was held."""

    def __init__(self, status: int = 200):
        self.requests: list[tuple[str, str, str, bytes]] = []
        self.command_lines: list[bytes] = []
        self.secret = uuid.uuid4().hex

        def respond(verb, path, headers, body):
            self.command_lines = command_lines()
            self.requests.append((verb, path, headers.get("Content-Type", ""), body))
            return status, {"ok": status == 200}

        self.server = JsonServer(respond)
        self.url = f"{self.server.url}/hooks/{self.secret}"


@pytest.fixture
def webhook():
    hook = Webhook()
    hook.server.start()
    yield hook
    hook.server.stop()


@pytest.fixture
def no_apt(tmp_path):
    """`apt-get` on PATH for the script: records that it was called instead of installing anything."""
    bindir, record = tmp_path / "bin", tmp_path / "apt-get-calls"
    bindir.mkdir()
    (bindir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    (bindir / "apt-get").chmod(0o755)
    return bindir, record


def notify(env: dict[str, str], bindir: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DRONE_", "NOTIFY_"))}
    full = {**clean, "PATH": f"{bindir}:{os.environ['PATH']}", **env}
    return subprocess.run(["/bin/sh", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=120, check=False)


def test_a_hostile_tag_makes_valid_json_and_the_url_is_on_no_command_line(webhook, no_apt):
    bindir, apt_calls = no_apt
    link = "https://drone.example/mlbatch/42"
    result = notify({"NOTIFY_WEBHOOK": webhook.url, "DRONE_TAG": HOSTILE_TAG, "DRONE_BUILD_LINK": link}, bindir)
    assert result.returncode == 0, result.stderr
    assert webhook.command_lines, "the receiver read the process table while it held the request"
    carrying = [line for line in webhook.command_lines if webhook.secret.encode() in line]
    assert carrying == [], f"the webhook URL is on a command line: {carrying}"
    ((verb, path, content_type, body),) = webhook.requests
    assert (verb, path, content_type) == ("POST", f"/hooks/{webhook.secret}", "application/json")
    assert json.loads(body) == {"text": f"mlbatch release {HOSTILE_TAG} failed: {link}"}
    assert webhook.secret not in result.stdout + result.stderr
    assert not apt_calls.exists(), "python3 is there: nothing to install"


def test_without_a_tag_or_link_the_notice_says_what_it_knows(webhook, no_apt):
    result = notify({"NOTIFY_WEBHOOK": webhook.url, "DRONE_BUILD_NUMBER": "7"}, no_apt[0])
    assert result.returncode == 0, result.stderr
    assert json.loads(webhook.requests[0][3]) == {"text": "mlbatch release ? failed: build 7"}


def test_a_webhook_that_refuses_fails_the_step_without_printing_the_url(no_apt):
    hook = Webhook(status=500)
    hook.server.start()
    try:
        result = notify({"NOTIFY_WEBHOOK": hook.url, "DRONE_TAG": "v1.0.0"}, no_apt[0])
    finally:
        hook.server.stop()
    assert result.returncode != 0 and "500" in result.stderr
    assert hook.secret not in result.stdout + result.stderr


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "not a url"])
def test_a_webhook_that_is_not_http_is_refused_without_printing_it(no_apt, url):
    result = notify({"NOTIFY_WEBHOOK": url, "DRONE_TAG": "v1.0.0"}, no_apt[0])
    assert result.returncode != 0 and "expected an http(s) URL" in result.stderr
    assert url not in result.stdout + result.stderr


def test_without_a_webhook_nothing_is_sent(no_apt):
    result = notify({"DRONE_TAG": "v1.0.0"}, no_apt[0])
    assert result.returncode == 0 and "nothing sent" in result.stdout
