"""`invoke doctor`: every check of a profile's readiness in one table."""

from mlbatch.core.options import Format
from tasks.common import FORMAT_HELP, PROFILE_HELP, errors, exit_with, settings, task


@task(help={"format": FORMAT_HELP, "profile": PROFILE_HELP})
def doctor(c, format: Format = "table", profile=None):
    """Is this profile ready? Every check in one table; exit with the reserved code of the worst gap (0: ready).

    gcp: credentials, APIs, permissions, network, bucket, engine, registry, Packer; local: engine,
    registry, bucket, base image, Packer."""
    from mlbatch import doctor as checks
    from mlbatch.ui import emit

    with errors():
        data = checks.report(settings(c, profile))
    emit(format, data, checks.render)
    exit_with(data["exit_code"])
