"""The job catalog as people see it and grow it: `invoke jobs` (a release's jobs, or the
checkout's), `invoke jobs.new NAME` (a job skeleton, its catalog entry and its test) and
`invoke jobs.schema` (batch_code/jobs.schema.json, the JSON Schema editors check jobs.yaml
with, generated from the catalog's model in mlbatch.core.catalog)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlbatch.core.catalog import Job, checkout_catalog, container_names, json_schema, parse_catalog
from mlbatch.core.errors import BadInput
from mlbatch.core.names import check_job_name
from mlbatch.ui import Say, columns

SCHEMA_FILE = Path("batch_code") / "jobs.schema.json"
CATALOG_FILE = Path("batch_code") / "jobs.yaml"
JOB_TESTS = Path("tests") / "jobs"


# --- the listing ------------------------------------------------------------------------------


def job_rows(catalog: dict[str, Job]) -> list[dict[str, Any]]:
    return [job.to_dict() for job in catalog.values()]


def _params_text(params: list[dict[str, Any]]) -> str:
    return " ".join(f"{p['name']}={p['default']}" for p in params) or "-"


def render_jobs(rows: list[dict[str, Any]]) -> str:
    lines = [
        (
            r["name"],
            r["container"],
            r["machine_type"] + (f"+{r['gpu_count']}x{r['gpu_type']}" if r["gpu_count"] else ""),
            "spot" if r["spot"] else "on-demand",
            f"{r['timeout_seconds']}s",
            _params_text(r["params"]),
        )
        for r in rows
    ]
    return columns(
        ("JOB", "CONTAINER", "MACHINE", "VM", "TIMEOUT", "PARAMS (defaults)"),
        lines,
        leave_out=("CONTAINER", "TIMEOUT", "VM", "MACHINE"),
        shorten="PARAMS (defaults)",
    )


# --- the JSON Schema --------------------------------------------------------------------------


def schema_text() -> str:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **json_schema()}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schema(root: Path) -> Path:
    path = root / SCHEMA_FILE
    path.write_text(schema_text())
    return path


# --- a new job ----------------------------------------------------------------------------------

JOB_CODE = '''"""{name}: TODO say in one line what this job does (batch_code/jobs.yaml has its catalog entry).

The agent runs it in its container with the params as --name=value arguments; what it writes
under $MLBATCH_RESULTS_DIR is uploaded with the run, and metrics.json there is what
`invoke runs` shows and sweeps rank by (the catalog's `metric`).
"""

import argparse
import json
import os
import pathlib

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--size", type=int, default=10, help="how much work to do")
args = parser.parse_args()

score = sum(range(args.size))  # TODO the job's work
print(f"{name}: size {{args.size}}, score {{score}}", flush=True)

results = pathlib.Path(os.environ.get("MLBATCH_RESULTS_DIR", "results"))
results.mkdir(parents=True, exist_ok=True)
(results / "metrics.json").write_text(json.dumps({{"score": score}}) + "\\n")
'''

CATALOG_ENTRY = """
  {name}:
    description: TODO say in one line what {name} does.
    container: {container}
    command: [python, {module}.py]
    machine_type: e2-small
    spot: true
    max_preemption_retries: 2
    timeout_seconds: 600
    metric: score  # sweeps rank their tasks by this key of metrics.json
    metric_goal: max
    params:
      size: {{type: int, default: 10, help: how much work to do}}
"""

JOB_TEST = '''"""The {name} job's own test: its script run as the agent runs it (params as --name=value,
MLBATCH_RESULTS_DIR set), on this machine's Python; a job that needs its container's
libraries is tested by `invoke run-batch --job {name}` instead."""

import json
import os
import subprocess
import sys
from pathlib import Path

CODE = Path(__file__).resolve().parents[2] / "batch_code"


def test_{module}_writes_its_metric(tmp_path):
    env = {{**os.environ, "MLBATCH_RESULTS_DIR": str(tmp_path)}}
    done = subprocess.run(
        [sys.executable, "{module}.py", "--size=4"], cwd=CODE, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "metrics.json").read_text()) == {{"score": 6}}
'''


def new_job(root: Path, name: str, say: Say) -> list[Path]:
    """Write the job's code, its catalog entry and its test; refuse (100) before writing
    anything when the name is bad or taken."""
    check_job_name(name)
    module = name.replace("-", "_")
    catalog_path = root / CATALOG_FILE
    catalog_text = catalog_path.read_text()
    catalog = checkout_catalog(root)
    if name in catalog:
        raise BadInput(f"job {name!r} is already in {CATALOG_FILE}: choose another name")
    code, test = root / "batch_code" / f"{module}.py", root / JOB_TESTS / f"test_{module}.py"
    for path in (code, test):
        if path.exists():
            raise BadInput(f"{path.relative_to(root)} exists: choose another job name (or remove it)")
    containers = container_names(root / "containers")
    if not containers:
        raise BadInput("containers/ has no folder with a Dockerfile: a job runs in one of them")
    entry = CATALOG_ENTRY.format(name=name, module=module, container=containers[0])
    new_catalog = catalog_text.rstrip("\n") + "\n" + entry
    parse_catalog(new_catalog, set(containers))  # the entry must make a valid catalog before anything is written
    written: list[Path] = []
    try:
        for path, text in ((code, JOB_CODE.format(name=name)), (test, JOB_TEST.format(name=name, module=module))):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
        if not (test.parent / "__init__.py").exists():
            (test.parent / "__init__.py").write_text("")
        catalog_path.write_text(new_catalog)  # last: the catalog names the job once its files are there
    except OSError as exc:
        for path in written:  # nothing half made is left behind
            path.unlink(missing_ok=True)
        raise BadInput(f"cannot write the new job's files ({exc.strerror or exc}: {exc.filename})") from None
    for path in (code, catalog_path, test):
        say(f"wrote {path.relative_to(root)}")
    return [code, catalog_path, test]
