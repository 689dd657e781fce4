"""What `gcloud functions deploy` needs for the mlbatch Cloud Function, written by `invoke schedule.export`.

    DIR/source/main.py           the entry point `pubsub_trigger` (the Python runtime loads main.py)
    DIR/source/mlbatch/          this checkout's package, vendored beside main.py (Google's
                                 "package local dependencies" for Python functions)
    DIR/source/requirements.txt  what the Python buildpack installs with pip: the package's own
                                 dependencies and those of its `trigger` extra, from pyproject.toml
    DIR/env.yaml                 every setting of the profile, one variable each
                                 (`gcloud functions deploy --env-vars-file`); not in the source

The function has no invoke.yaml and no checkout: `settings_from_environment` rebuilds the
profile from those variables and validates it with `load_settings`, inside the handler, so a
bad setting is reported on the message (and acknowledged) rather than failing the import.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tomllib
from collections.abc import Mapping
from pathlib import Path

import yaml

from mlbatch.core.errors import BadInput
from mlbatch.core.settings import Settings, load_settings

PROFILE_VAR = "MLBATCH_SETTINGS_PROFILE"
PREFIX = "MLBATCH_SETTINGS_"
# Settings that are not the function's: where this machine keeps state, files of this machine, and
# the run-end notification (the function starts detached runs, which nobody follows to notify;
# a webhook URL is a secret that has no business in env.yaml).
NOT_EXPORTED = ("profile", "project_root", "state_dir", "ca_bundle", "price_table", "notify_webhook", "notify_topic")
MAIN = '''"""mlbatch's Cloud Function, written by `invoke schedule.export`: Pub/Sub message -> a detached run.

Settings come from the MLBATCH_SETTINGS_* variables of env.yaml (gcloud --env-vars-file)."""

from mlbatch.triggers.function import pubsub_trigger  # noqa: F401 - the entry point
'''
_EXTRA = re.compile(r"^mlbatch\[([a-z,]+)\]$")


def _exported_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Settings) if f.name not in NOT_EXPORTED]


def environment(settings: Settings) -> dict[str, str]:
    """One variable per setting: strings as they are, other values as JSON (true, 22, ["a", "b"])."""
    env = {PROFILE_VAR: settings.profile}
    for field in _exported_fields():
        value = getattr(settings, field.name)
        if not isinstance(value, str):
            value = json.dumps(list(value) if isinstance(value, tuple) else value)
        env[PREFIX + field.name.upper()] = value
    return env


def settings_from_environment(env: Mapping[str, str], root: Path) -> Settings:
    """The settings `environment` wrote, validated as the CLI validates them (BadInput naming the variable)."""
    profile = env.get(PROFILE_VAR, "")
    if not profile:
        raise BadInput(f"{PROFILE_VAR} is not set: deploy the function with the env.yaml of `invoke schedule.export`")
    values = {}
    for field in _exported_fields():
        name = PREFIX + field.name.upper()
        if name not in env:
            continue
        text = env[name]
        if field.type == "str":
            values[field.name] = text
            continue
        try:
            values[field.name] = json.loads(text)
        except ValueError:
            raise BadInput(f'invalid {name}={text!r}: expected JSON (true, 22, ["europe-west4-a"])') from None
    return load_settings({"profile": profile, "profiles": {profile: values}}, root, env)


def requirements(root: Path) -> list[str]:
    """The package's dependencies and its `trigger` extra's, extras of mlbatch itself resolved."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    wanted, seen, pending = list(project.get("dependencies", [])), set(), ["trigger"]
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in extras[extra]:
            if match := _EXTRA.match(requirement):
                pending += match[1].split(",")
            elif requirement not in wanted:
                wanted.append(requirement)
    return wanted


def paths(out_dir: Path) -> tuple[Path, Path]:
    """The function's source folder and its env file, under the export's folder."""
    return out_dir / "source", out_dir / "env.yaml"


def write_source(settings: Settings, out_dir: Path) -> tuple[Path, Path]:
    """Write DIR/source and DIR/env.yaml (replacing an earlier export); return both paths."""
    root = settings.project_root
    source, env_file = paths(out_dir)
    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    shutil.copytree(root / "mlbatch", source / "mlbatch", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (source / "main.py").write_text(MAIN)
    (source / "requirements.txt").write_text("\n".join(requirements(root)) + "\n")
    env_file.write_text(yaml.safe_dump(environment(settings), sort_keys=True))
    return source, env_file
