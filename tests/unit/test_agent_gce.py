import http.server
import json
import threading

import pytest

from mlbatch.agent.gce import instance_spec, needs_registry_login
from mlbatch.core.runs import InstanceSpec
from tests.unit.test_records import SPEC


@pytest.mark.parametrize(
    ("ref", "login"),
    [
        ("europe-west4-docker.pkg.dev/proj/mlbatch/trainer@sha256:ab", True),
        ("gcr.io/proj/trainer@sha256:ab", True),
        ("eu.gcr.io/proj/trainer@sha256:ab", True),
        ("127.0.0.1:5000/trainer@sha256:ab", False),
        ("docker.io/library/python@sha256:ab", False),
    ],
)
def test_only_google_registries_get_the_vm_token(ref, login):
    assert needs_registry_login(ref) is login


class _Metadata(http.server.BaseHTTPRequestHandler):
    """The GCE metadata server's answers, strict about the Metadata-Flavor header like the real one."""

    values: dict[str, str] = {}

    def do_GET(self):  # noqa: N802 - the http.server hook
        path = self.path.removeprefix("/computeMetadata/v1/")
        if self.headers.get("Metadata-Flavor") != "Google":
            self.send_error(403)
        elif path not in self.values:
            self.send_error(404)
        else:
            body = self.values[path].encode()
            self.send_response(200)
            self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def metadata_server(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{server.server_port}")
    yield _Metadata.values
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("written_by", ["this mlbatch", "an mlbatch before schema versions"])
def test_the_agent_reads_its_instance_spec_from_metadata(metadata_server, monkeypatch, tmp_path, written_by):
    spec = json.loads(SPEC.to_json())
    if written_by != "this mlbatch":
        del spec["schema_version"]
        spec["profile"] = "gcp"
    metadata_server.update(
        {
            "instance/attributes/mlbatch-run-spec": json.dumps(spec),
            "instance/attributes/mlbatch-attempt": "2",
            "instance/name": "mlb-sleep-20261125-200000-abcd-2",
        }
    )
    monkeypatch.setenv("MLBATCH_WORKDIR", str(tmp_path))
    assert instance_spec() == InstanceSpec(
        spec=SPEC, attempt=2, instance="mlb-sleep-20261125-200000-abcd-2", workdir=str(tmp_path)
    )
