"""What every namespace's tasks share: the settings of a profile, and errors as exit codes."""

from __future__ import annotations

import contextlib
from pathlib import Path

from invoke import Exit

ROOT = Path(__file__).resolve().parent.parent  # the checkout: invoke.yaml, batch_code/, packer/, ...
PROFILE_HELP = "settings profile: local (default), gcp, or test (the gcp code path against emulators)"


def settings(c, profile=None):
    """The validated settings of `profile` (default: mlbatch.profile of invoke's config)."""
    from mlbatch.core.settings import load_settings

    config = dict(c.config.get("mlbatch", {}))
    if profile:
        config["profile"] = profile
    return load_settings(config, ROOT)


@contextlib.contextmanager
def errors():
    """MlbatchError -> a clear message and its reserved exit code (see README, "Exit codes")."""
    from mlbatch.core.errors import MlbatchError

    try:
        yield
    except MlbatchError as exc:
        raise Exit(f"mlbatch: {exc}", code=int(exc.exit_code)) from None


def exit_with(code: int) -> None:
    """End the task with a run's exit code (the job's own, or a reserved one) unless it is 0."""
    if code:
        raise Exit(code=code)
