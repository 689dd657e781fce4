"""A Docker engine socket of its own, as a pipeline's dind service provides one: a unix socket in
a temp folder relaying every connection to this machine's engine, counting them.

The Drone release step reaches its engine as DOCKER_HOST=unix:///var/run/docker.sock, the
socket of the `docker` (dind) service in a shared temp volume. A test points DOCKER_HOST at
`relay.socket` instead and checks that the release's builds and pushes went through it
(`relay.connections`), not through a socket it happened to find.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

HOST_ENGINE = "/var/run/docker.sock"


class Relay:
    def __init__(self, socket_path: Path, engine: str = HOST_ENGINE):
        self.socket = socket_path
        self.engine = engine
        self.connections = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(socket_path))
        self._server.listen(64)
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            with self._lock:
                self.connections += 1
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.engine)
            done = threading.Barrier(2, action=lambda c=client, u=upstream: (c.close(), u.close()))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink, done), daemon=True).start()

    def close(self) -> None:
        self._server.close()


def _pipe(source: socket.socket, sink: socket.socket, done: threading.Barrier) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    # Half-close so the other direction can still finish (the engine streams build output);
    # both sockets close once both directions have ended.
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
    done.wait()


@contextlib.contextmanager
def engine_socket() -> Iterator[Relay]:
    engine = os.environ.get("DOCKER_HOST", f"unix://{HOST_ENGINE}").removeprefix("unix://")
    with tempfile.TemporaryDirectory(prefix="mlbatch-dind-") as tmp:
        relay = Relay(Path(tmp, "docker.sock"), engine)
        try:
            yield relay
        finally:
            relay.close()
