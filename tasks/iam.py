"""`invoke iam.setup` and `invoke iam.check`: the gcp profile's three identities (release,
runner, trigger), their least-privilege grants, and the check that the runner cannot write
releases (docs/architecture.md, "Identities and trust")."""

from invoke import Collection

from tasks.common import errors, settings, task


@task(
    help={
        "profile": "settings profile whose project, bucket, registry and runner service account are used (default gcp)",
        "output_dir": "folder for the IAM condition files the commands read (default .mlbatch/iam)",
        "release_account": "the release (CI) service account (default mlbatch-release@PROJECT.iam.gserviceaccount.com)",
        "trigger_account": "the trigger service account (default: trigger_service_account, else mlbatch-trigger@PROJECT...)",
    }
)
def setup(c, profile="gcp", output_dir=None, release_account="", trigger_account=""):
    """Print the gcloud commands that create the identities and grant each only what it needs (runs nothing)."""
    from pathlib import Path

    from mlbatch.iam import setup as iam_setup

    with errors():
        s = settings(c, profile)
        out = Path(output_dir).resolve() if output_dir else s.state_dir / "iam"
        print(iam_setup.export(s, out, release_account, trigger_account), end="")


@task(help={"profile": "settings profile whose bucket and runner service account are checked (default gcp)"})
def check(c, profile="gcp"):
    """Read the bucket's IAM policy; exit 111 if the runner may write releases/ (says what it checks)."""
    from mlbatch.core import gcp_base
    from mlbatch.iam import policy

    with errors():
        s = settings(c, profile)
        credentials, _ = gcp_base.default_credentials()  # none: 111 saying how to provide them
        policy.check_runner_cannot_write_releases(s, credentials, print)
        print(f"ok: the runner {s.service_account} cannot write releases/ of {s.bucket} (checked: {policy.CHECKS})")


ns = Collection("iam", setup, check)
