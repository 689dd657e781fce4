"""`invoke dashboard`: serve the pages on this machine, or write them into a folder.

The server answers GET and HEAD only (anything else is 501, from http.server), on 127.0.0.1,
to requests whose Host header names that address or `localhost` at its port: a web page
elsewhere that rebinds its DNS name to 127.0.0.1 cannot read the bucket's records through it.
Ctrl-C and SIGTERM stop it cleanly: the listening socket is closed and the command exits 0.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jinja2 import Environment

from mlbatch.core.bucket import Bucket, file_bucket_dir, open_bucket
from mlbatch.core.errors import BadInput, MlbatchError
from mlbatch.core.settings import Settings
from mlbatch.dashboard import data
from mlbatch.dashboard.render import CONTENT_SECURITY_POLICY, PageNotFound, Site
from mlbatch.run.prices import load_prices
from mlbatch.ui import Say

HOST = "127.0.0.1"  # this machine only: the records are the bucket's, and nothing asks who reads them
DEFAULT_PORT = 8050
_ERROR_PAGE = Environment(autoescape=True).from_string(
    "<!doctype html><html lang=en><meta charset=utf-8><title>{{ code }}</title>"
    "<h1>{{ code }} {{ phrase }}</h1><p>{{ message }}</p><p><a href=index.html>runs</a></p></html>"
)


def site_for(settings: Settings, limit: int = data.DEFAULT_LIMIT) -> Site:
    """The pages over the profile's bucket, priced as `invoke runs.show` prices them."""
    if limit < 1:
        raise BadInput(f"invalid --limit {limit}: expected a number of runs, 1 or more")
    bucket: Bucket = open_bucket(settings.bucket)
    return Site(data.Source.of(bucket, load_prices(settings.price_table), settings.region, limit))


class _Stopped(Exception):  # noqa: N818 - a stop asked for, not an error
    pass


def _handler(site: Site, port: int) -> type[BaseHTTPRequestHandler]:
    allowed = {f"{HOST}:{port}", f"localhost:{port}"}
    rendering = threading.Lock()  # one page at a time: bucket clients are not all made for threads

    class Handler(BaseHTTPRequestHandler):
        server_version = "mlbatch-dashboard"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._answer(body=True)

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
            self._answer(body=False)

        def _answer(self, body: bool) -> None:
            if self.headers.get("Host", "") not in allowed:
                self._send(HTTPStatus.MISDIRECTED_REQUEST, _error(HTTPStatus.MISDIRECTED_REQUEST, "not this server's name"), body)
                return
            name = unquote(urlsplit(self.path).path).lstrip("/")
            try:
                with rendering:
                    page, content_type = site.page(name)
            except PageNotFound as exc:
                self._send(HTTPStatus.NOT_FOUND, _error(HTTPStatus.NOT_FOUND, str(exc) or name), body)
                return
            except MlbatchError as exc:  # a record that cannot be read: say which
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, _error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc)), body)
                return
            except Exception:
                traceback.print_exc(file=sys.stderr)
                message = "the page failed; the server's output has the traceback"
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, _error(HTTPStatus.INTERNAL_SERVER_ERROR, message), body)
                return
            self._send(HTTPStatus.OK, page, body, content_type)

        def _send(self, status: HTTPStatus, page: bytes, body: bool, content_type: str = "text/html; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(page)))
            self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY + "; frame-ancestors 'none'")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if body:
                self.wfile.write(page)

    return Handler


def _error(status: HTTPStatus, message: str) -> bytes:
    return _ERROR_PAGE.render(code=int(status), phrase=status.phrase, message=message).encode()


def serve(site: Site, port: int, say: Say) -> None:
    """Serve until Ctrl-C or SIGTERM; then close the socket and return."""
    if not 0 <= port <= 65535:
        raise BadInput(f"invalid --port {port}: expected 1 to 65535 (0: any free port)")
    try:
        server = ThreadingHTTPServer((HOST, port), _handler(site, port))
    except OSError as exc:
        raise BadInput(f"cannot serve on {HOST}:{port}: {exc.strerror}; give another --port") from None
    server.daemon_threads = True  # a request in flight does not hold up the stop
    if port == 0:  # the port the system chose: the Host header names it
        server.RequestHandlerClass = _handler(site, server.server_port)

    def stop(signum: int, _frame: object) -> None:
        raise _Stopped(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop)
    say(f"dashboard of {site.source.bucket.uri} at http://{HOST}:{server.server_port}/ (read-only; Ctrl-C stops)")
    try:
        server.serve_forever(poll_interval=0.5)
    except (KeyboardInterrupt, _Stopped) as exc:
        say(f"dashboard stopped ({exc or 'SIGINT'})")
    finally:
        server.server_close()
        signal.signal(signal.SIGTERM, previous)


def export(site: Site, folder: Path, say: Say) -> list[Path]:
    """Write every page the index reaches into `folder` (opened as files, they link to each other)."""
    folder = folder.resolve()
    bucket_dir = file_bucket_dir(site.source.bucket.uri)
    if bucket_dir is not None and folder.is_relative_to(bucket_dir.resolve()):
        raise BadInput(f"--export {folder}: inside the bucket; expected a folder outside {site.source.bucket.uri}")
    if folder.exists() and not folder.is_dir():
        raise BadInput(f"--export {folder}: not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in site.pages():
        page, _ = site.page(name)
        (folder / name).write_bytes(page)
        written.append(folder / name)
    say(f"dashboard of {site.source.bucket.uri}: {len(written)} files in {folder} (open {folder / 'index.html'})")
    return written
