"""A read-only web view of the bucket's records (`invoke dashboard`): runs with their status,
phases and cost, a run's log, a sweep's tasks with its metric plotted against each param, a
job's metric across releases.

data: what each page shows, read through mlbatch.run.inspect and mlbatch.run.records from a
      bucket that refuses writes; plots: matplotlib SVG drawn on the server; render: Jinja2
      templates, one flat page name each; server: the loopback HTTP server and the export.
Needs the `dashboard` extra (jinja2, matplotlib); no script, no CDN.
"""

from __future__ import annotations

import importlib.util

from mlbatch.core.errors import InfraError

EXTRA = ("jinja2", "matplotlib")  # pyproject's `dashboard` extra


def _missing() -> list[str]:
    missing = []
    for name in EXTRA:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except (ImportError, ValueError):
            missing.append(name)
    return missing


if _missing():  # said before any page fails halfway
    raise InfraError(f"invoke dashboard needs {', '.join(_missing())}: pip install -e '.[dashboard]' (the dev extra has it)")
