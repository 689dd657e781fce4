"""A second docker-registry on loopback that requires a login, as Artifact Registry does.

htpasswd auth (bcrypt) accepts user `oauth2accesstoken` with the one token the test's fake
token endpoint issues and refuses anything else. The engine treats 127.0.0.0/8 registries
as insecure, so plain http carries the basic auth.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support.gcs import _free_port

CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}/data
  delete:
    enabled: true
http:
  addr: {addr}
auth:
  htpasswd:
    realm: mlbatch-test
    path: {root}/htpasswd
"""


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def authenticating_registry(user: str, password: str) -> Iterator[str]:
    """Yield host:port of a registry that accepts only `user`/`password`."""
    import bcrypt

    root = Path(tempfile.mkdtemp(prefix="mlbatch-auth-registry-"))
    addr = f"127.0.0.1:{_free_port()}"
    (root / "htpasswd").write_text(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
    (root / "config.yml").write_text(CONFIG.format(root=root, addr=addr))
    log = (root / "registry.log").open("wb")
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if _status(f"http://{addr}/v2/") == 401:  # up, and asking for a login
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the authenticating registry did not start: {(root / 'registry.log').read_text()}")
            time.sleep(0.1)
        yield addr
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
