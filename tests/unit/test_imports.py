import subprocess
import sys

from tests.conftest import ROOT


def test_the_local_path_never_imports_the_compute_client():
    code = ("import sys, tasks; from mlbatch.run import controller, records; from mlbatch.providers import local; "
            "from mlbatch.release import flow; from mlbatch.agent import main; "
            "print('google.cloud.compute_v1' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_agent_depends_only_on_core():
    code = ("import sys, mlbatch.agent.main, mlbatch.agent.runner, mlbatch.agent.gce; "
            "print(sorted(m for m in sys.modules if m.startswith('mlbatch.') and not m.startswith(('mlbatch.core', "
            "'mlbatch.agent'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
