"""Hashed requirement locks: what pip installs into the VM image and into the containers,
each package pinned and checked against its sha256 (`pip install --require-hashes`), so
nothing is resolved at bake or build time (docs/architecture.md, "Supply chain").

`invoke deps.lock` regenerates them with pip-tools (`pip-compile --generate-hashes`) from
their sources: the agent's dependencies from pyproject.toml's `[project] dependencies` into
the agent role (the image's venv), and each container's `requirements.in` into its
`requirements.txt`. tests/unit/test_locks.py holds each lock to its source.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from mlbatch.core.errors import BadInput, MlbatchError
from mlbatch.core.scrub import scrub
from mlbatch.ui import Say

PYPI = "https://pypi.org/simple"
AGENT_LOCK = "ansible/roles/agent/files/requirements.txt"
# A lock's entries: `name==version \` then its `--hash=sha256:...` lines.
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclasses.dataclass(frozen=True)
class Lock:
    source: str  # what pip-compile reads, relative to the checkout
    output: str  # the lock it writes
    what: str


def locks(root: Path) -> list[Lock]:
    """Every lock of the checkout: the agent's, then each container's with a requirements.in."""
    found = [Lock("pyproject.toml", AGENT_LOCK, "the agent's dependencies, installed into the VM image")]
    for source in sorted((root / "containers").glob("*/requirements.in")):
        folder = source.parent.relative_to(root).as_posix()
        found.append(Lock(f"{folder}/requirements.in", f"{folder}/requirements.txt", f"container {source.parent.name}"))
    return found


def read_lock(text: str) -> dict[str, tuple[str, list[str]]]:
    """name (normalised) -> (pinned version, its sha256 hashes), from a pip-compile lock."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for line in text.splitlines():
        if pin := _PIN.match(line):
            current = normalise(pin[1])
            entries[current] = (pin[2], [])
        elif current and (digest := _HASH.search(line)):
            entries[current][1].append(digest[1])
        elif line and not line.startswith((" ", "#")):
            current = ""
    return entries


def normalise(name: str) -> str:
    """PEP 503: names compare lowercased, with runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def compile_argv(lock: Lock, index_url: str, upgrade: bool) -> list[str]:
    tool = shutil.which("pip-compile", path=str(Path(sys.executable).parent)) or shutil.which("pip-compile")
    if tool is None:
        raise BadInput("pip-compile is missing: install the dev extra (pip install -e '.[dev]'), which brings pip-tools")
    argv = [tool, "--quiet", "--generate-hashes", "--allow-unsafe", "--strip-extras"]
    argv += ["--no-emit-index-url", "--no-emit-find-links", "--index-url", index_url]
    if upgrade:
        argv.append("--upgrade")
    return [*argv, "--output-file", lock.output, lock.source]


def check_index_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
        raise BadInput(f"invalid --index-url {url!r}: expected an https:// URL of a package index, e.g. {PYPI}")
    return url


def regenerate(root: Path, say: Say, index_url: str = PYPI, upgrade: bool = False) -> list[Lock]:
    """Rewrite every lock from its source; `upgrade`: the newest versions the sources allow."""
    check_index_url(index_url)
    # The index alone decides: a pip.conf's find-links, extra indexes or constraints of this
    # machine would leak into a lock every machine must install.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
    env["PIP_CONFIG_FILE"] = os.devnull
    done = []
    for lock in locks(root):
        say(f"locking {lock.what}: {lock.source} -> {lock.output}")
        result = subprocess.run(compile_argv(lock, index_url, upgrade), cwd=root, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise MlbatchError(
                f"pip-compile of {lock.source} failed:\n" + scrub(result.stderr[-3000:])
            )  # an index URL's password
        done.append(lock)
    return done
