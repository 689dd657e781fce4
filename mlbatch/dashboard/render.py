"""The dashboard's pages: Jinja2 templates (autoescaped) over `data`, plots from `plots`.

Every page has a flat name (`index.html`, `run-<run id>.html`, `log-<run id>.html`,
`job-<job>.html`, `style.css`) and links to the others by that name, so the same pages
work served (`/run-<id>.html`) and exported into a folder (opened as files).
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from mlbatch.core import runs
from mlbatch.core.errors import BadInput, NotFound
from mlbatch.core.names import check_job_name, job_of_run_id
from mlbatch.core.versions import sort_key
from mlbatch.dashboard import data, plots

STYLE = "style.css"
INDEX = "index.html"
_PAGE = re.compile(r"^(?P<kind>run|log|job)-(?P<name>[a-z0-9][a-z0-9-]{0,80})\.html$")
# No script at all; styles from the page's own stylesheet and matplotlib's SVG style attributes.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
)


class PageNotFound(Exception):
    """No page of that name: a 404."""


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 120 else f"{value / 60:.1f} min"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("mlbatch.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(money=_money, seconds=_seconds, number=_number)
    env.globals.update(csp=CONTENT_SECURITY_POLICY, style=STYLE, index=INDEX, phases=runs.PHASES)
    return env


class Site:
    """Renders a page by name, and lists the pages an export writes."""

    def __init__(self, source: data.Source):
        self.source = source
        self.env = _environment()

    def page(self, name: str) -> tuple[bytes, str]:
        """(body, content type) of the page; PageNotFound when there is none of that name."""
        if name in ("", INDEX):
            return self._html("index.html", **data.run_list(self.source)), "text/html; charset=utf-8"
        if name == STYLE:
            return resources.files("mlbatch.dashboard").joinpath("static", STYLE).read_bytes(), "text/css; charset=utf-8"
        match = _PAGE.match(name)
        if not match:
            raise PageNotFound(name)
        kind, ident = match["kind"], match["name"]
        try:
            if kind == "job":
                return self._job(check_job_name(ident)), "text/html; charset=utf-8"
            job_of_run_id(ident)
            if kind == "run":
                return self._run(ident), "text/html; charset=utf-8"
            return self._html("log.html", **data.run_log(self.source, ident)), "text/html; charset=utf-8"
        except (BadInput, NotFound) as exc:
            raise PageNotFound(str(exc)) from None

    def pages(self) -> list[str]:
        """Everything the index reaches: each run shown, its log, each job."""
        index = data.run_list(self.source)
        names = [INDEX, STYLE]
        for row in index["runs"]:
            names += [f"run-{row['run_id']}.html", f"log-{row['run_id']}.html"]
        return names + [f"job-{job}.html" for job in index["jobs"]]

    def _html(self, template: str, **values: Any) -> bytes:
        return self.env.get_template(template).render(**values).encode()

    def _run(self, run_id: str) -> bytes:
        detail = data.run_detail(self.source, run_id)
        charts = []
        for param, points in detail["points"].items():
            if points:
                svg = plots.scatter(points, param, detail["metric"], name=f"{param}")
                charts.append({"param": param, "svg": Markup(svg), "points": len(points)})  # noqa: S704 - matplotlib's escaped SVG
        return self._html("run.html", **detail, charts=charts)

    def _job(self, job: str) -> bytes:
        history = data.job_history(self.source, job)
        charts = []
        pick = max if history["goal"] == "max" else min
        for metric in history["metrics"]:
            series = history["series"][metric]
            if not series:
                continue
            versions = sorted({p["version"] for p in series}, key=sort_key)
            best = [(v, pick(p["value"] for p in series if p["version"] == v)) for v in versions]
            points = [(p["version"], p["value"], p["sweep"]) for p in series]  # a sweep's best task: a star
            svg = plots.scatter(points, "release", metric, name=f"release-{metric}", order=versions, line=best)
            charts.append({"metric": metric, "svg": Markup(svg), "points": len(points)})  # noqa: S704 - matplotlib's escaped SVG
        return self._html("job.html", **history, charts=charts)
