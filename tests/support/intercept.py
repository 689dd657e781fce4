"""An intercepting HTTPS proxy (mitmdump) that routes Google API hosts to local fakes.

Go programs such as Packer honour HTTPS_PROXY and SSL_CERT_FILE: with `env()` in their
environment, their calls to compute.googleapis.com, www.googleapis.com/compute/ or
oauth2.googleapis.com reach the fakes on loopback, TLS terminated with mitmproxy's CA.
mitmproxy lives in its own venv (.venv-mitmproxy, made by scripts/bootstrap): its pins
(cryptography, ruamel.yaml) conflict with ansible-lint's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT
from tests.support.gcs import _free_port

ADDON = Path(__file__).with_name("intercept_addon.py")
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def mitmdump() -> str:
    for candidate in (os.environ.get("MITMDUMP", ""), str(ROOT / ".venv-mitmproxy" / "bin" / "mitmdump")):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("mitmdump")
    if not found:
        raise RuntimeError("mitmdump not found: run scripts/bootstrap (it makes .venv-mitmproxy) or set MITMDUMP")
    return found


@dataclasses.dataclass(frozen=True)
class Route:
    host: str
    target: str  # http://127.0.0.1:PORT of the fake
    prefix: str = "/"
    needs_token: bool = True


@dataclasses.dataclass
class Proxy:
    url: str
    ca_bundle: Path  # the system bundle plus mitmproxy's CA
    log: Path
    pid: int  # mitmdump's: it holds the token it checks, as Google's side does

    def env(self) -> dict[str, str]:
        return {"HTTPS_PROXY": self.url, "https_proxy": self.url, "SSL_CERT_FILE": str(self.ca_bundle)}

    def exchanges(self) -> list[dict]:
        """Every request that went through, as {"request": "GET https://host/path", "status": 200}."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


def google_routes(compute: str, token_endpoint: str) -> list[Route]:
    """The Compute API under both of its hosts, and Google's token endpoint."""
    return [
        Route("compute.googleapis.com", compute, "/compute/"),
        Route("www.googleapis.com", compute, "/compute/"),
        Route("oauth2.googleapis.com", token_endpoint, "/token", needs_token=False),
    ]


@contextlib.contextmanager
def intercepting_proxy(routes: list[Route], token: str = "", repair_source_disk: bool = False) -> Iterator[Proxy]:
    """mitmdump on 127.0.0.1; requests to a routed host need `Bearer <token>` when token is set.

    repair_source_disk: Debian's build of Packer 1.6.6 links google-api-go >= 0.36, whose
    compute base path lost "projects/", so its images.insert names the disk
    `https://compute.googleapis.com/compute/v1/PROJECT/zones/...`, which the real API (and
    the fake) refuse as malformed (hashicorp/packer#11511). Upstream 1.6.6 and the
    googlecompute plugin >= 1.0 send a valid URL. With this flag the proxy inserts the
    missing "projects/" and logs it as "repaired", standing in for such a Packer.
    """
    with tempfile.TemporaryDirectory(prefix="mlbatch-intercept-") as tmp:
        confdir, port = Path(tmp, "conf"), _free_port()
        log = Path(tmp, "exchanges.jsonl")
        env = {
            **os.environ,
            "MLBATCH_INTERCEPT_ROUTES": json.dumps([[r.host, r.prefix, r.target, r.needs_token and bool(token)] for r in routes]),
            "MLBATCH_INTERCEPT_TOKEN": token,
            "MLBATCH_INTERCEPT_LOG": str(log),
            "MLBATCH_INTERCEPT_REPAIR_SOURCE_DISK": "1" if repair_source_disk else "",
        }
        argv = [
            mitmdump(),
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(port),
            "--set",
            f"confdir={confdir}",
            # Never connect upstream before the addon has routed a request (no traffic off the machine).
            "--set",
            "connection_strategy=lazy",
            "--set",
            "termlog_verbosity=warn",
            "-s",
            str(ADDON),
        ]
        with open(Path(tmp, "mitmdump.log"), "wb") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            ca = confdir / "mitmproxy-ca-cert.pem"
            deadline = time.monotonic() + 60
            while not (ca.exists() and _listening(port)):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mitmdump did not start: " + Path(tmp, "mitmdump.log").read_text()[-2000:])
                time.sleep(0.2)
            bundle = Path(tmp, "ca-bundle.pem")
            bundle.write_text((SYSTEM_BUNDLE.read_text() if SYSTEM_BUNDLE.exists() else "") + ca.read_text())
            yield Proxy(url=f"http://127.0.0.1:{port}", ca_bundle=bundle, log=log, pid=proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
