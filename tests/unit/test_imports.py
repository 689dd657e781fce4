"""Import boundaries of docs/architecture.md ("Packages"), checked in a fresh interpreter each.
That a module IS loaded (the checks are not vacuous) holds in this interpreter as well: it is
checked here, sparing a fresh one the 2 s the Compute client takes to import."""

import subprocess
import sys

from tests.conftest import ROOT


def modules_after(imports: str) -> set[str]:
    code = f"import sys; {imports}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_local_path_never_imports_the_compute_client():
    # Not vacuous: the client must be importable (the gce extra) and seen when imported.
    from mlbatch.providers import gce  # noqa: F401

    assert "google.cloud.compute_v1" in sys.modules, "install the gce extra"
    loaded = modules_after(
        "import tasks; from mlbatch.run import controller, records; from mlbatch.providers import local; "
        "from mlbatch.release import flow; from mlbatch.agent import main"
    )
    assert "google.cloud.compute_v1" not in loaded


def test_the_agent_depends_only_on_core():
    loaded = modules_after("import mlbatch.agent.main, mlbatch.agent.runner, mlbatch.agent.gce, mlbatch.agent.node")
    outside = {m for m in loaded if m.startswith("mlbatch.") and not m.startswith(("mlbatch.core", "mlbatch.agent"))}
    assert outside == set()


def test_core_imports_nothing_outside_core():
    """Opening a gs:// bucket without an emulator asks core.gcp_base, not mlbatch.gcp, for credentials."""
    loaded = modules_after("from mlbatch.core import bucket, settings, runs, manifest, catalog, gcp_base")
    assert {m for m in loaded if m.startswith("mlbatch.") and not m.startswith("mlbatch.core")} == set()


def test_only_the_dashboard_loads_its_template_engine_and_plotting_library():
    # matplotlib alone takes ~0.5 s to import: `invoke runs` and run-batch must not pay it.
    loaded = modules_after("import tasks; from mlbatch.run import inspect, inspect_render, controller, sweep")
    assert {m for m in loaded if m.split(".")[0] in ("matplotlib", "jinja2")} == set()
    from mlbatch.dashboard import plots

    plots.scatter([(1, 1.0, False)], "x", "y", "n")
    assert "matplotlib" in sys.modules, "not vacuous: the plot loads it"


def test_a_run_builds_no_catalog_model():
    """The catalog's pydantic models validate jobs.yaml (a release, the jobs commands); a run takes
    its jobs from the manifest, so they are built at their first validation, not at import (~25 ms)."""
    code = (
        "import tasks; from mlbatch.run import commands, controller, sweep_local; from mlbatch.providers import local;"
        "from mlbatch.core import catalog; from mlbatch.core.settings import ProfileSettings;"
        "print([m.__pydantic_complete__ for m in (catalog.ParamSpec, catalog.JobSpec, catalog.CatalogFile)])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[False,", "False,", "False]"]
    checked = subprocess.run(
        [sys.executable, "-c", "from mlbatch.core import catalog; catalog.parse_catalog('jobs: {}'); print('x')"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "jobs.yaml" in checked.stderr, "not vacuous: a catalog is still validated (every problem with its path)"


def test_a_single_run_loads_no_sweep_module_and_no_base_image_module():
    """run-batch of one job (docs/architecture.md, "Launch overhead"): the sweep's modules load
    with a sweep, the base-image lock with local.up and a release."""
    lazy = {"mlbatch.run.sweep", "mlbatch.run.ranking", "mlbatch.core.sweeps", "mlbatch.local.base_images"}
    run = "import tasks; from mlbatch.run import commands; from mlbatch.providers import local"
    loaded = modules_after(f"{run}; commands.RunOptions('sleep', 'v1.0.0').request()")
    assert "mlbatch.run.controller" in loaded and lazy & loaded == set()
    sweep = modules_after(f"{run}; commands.RunOptions('sleep', 'v1.0.0', sweeps=('seconds=1,2',)).request()")
    assert {"mlbatch.run.sweep", "mlbatch.core.sweeps"} <= sweep, "not vacuous: a sweep loads them"


def test_mlbatch_starts_with_what_invoke_loaded_frozen_and_young_collections_spaced_out():
    """`mlbatch` (cli.main) calls core.process.starting: ~120 collections scanned the modules as
    they loaded, ~35 ms of a run's CPU."""
    code = (
        "import atexit, gc, sys; default = gc.get_threshold();"
        "atexit.register(lambda: print(gc.get_threshold()[0] > default[0], gc.get_threshold()[1:] == default[1:]));"
        "sys.argv = ['mlbatch', '--version']; from mlbatch.cli import main; main()"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True).stdout
    assert out.split()[-2:] == ["True", "True"]
    frozen = "import gc; from mlbatch.core.process import starting; starting(); print(gc.get_freeze_count() > 0)"
    out = subprocess.run([sys.executable, "-c", frozen], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True"]
