"""`invoke iam.setup`: the gcloud commands that create the three identities and grant them
exactly what mlbatch.iam.plan lists. Print-only: it runs nothing; the operator reads the
commands and runs them (or pipes them to a shell), as with `invoke schedule.export`.

Conditions go through `--condition-from-file` (a JSON file per condition, written under the
output folder): gcloud's `--condition=expression=...,title=...` splits on commas, and an
expression that lists prefixes has commas of its own (`api.getAttribute("...", "")`).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Mapping
from pathlib import Path

from mlbatch.core.catalog import Job
from mlbatch.core.errors import BadInput
from mlbatch.core.names import artifact_repository
from mlbatch.core.settings import Settings
from mlbatch.iam.plan import (
    BUCKET,
    CUSTOM_ROLES,
    NETWORK_PROJECT,
    PROJECT,
    REPOSITORY,
    RUNNER_ACCOUNT,
    Grant,
    Identity,
    identities,
)


@dataclasses.dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    why: str

    def line(self) -> str:
        return shlex.join(self.argv)


@dataclasses.dataclass(frozen=True)
class SetupPlan:
    identities: tuple[Identity, ...]
    commands: tuple[Command, ...]
    notes: tuple[str, ...]  # what no command can do (printed as comments)
    condition_files: dict[Path, str]  # written before the commands are shown

    def script(self) -> str:
        lines = [f"# {note}" for note in self.notes]
        for command in self.commands:
            lines += [f"# {command.why}", command.line()]
        return "\n".join(lines) + "\n"


def _repository(settings: Settings) -> tuple[str, str]:
    found = artifact_repository(settings.registry)
    if found is None:
        raise BadInput(
            f"registry {settings.registry!r} is not an Artifact Registry repository: "
            "expected REGION-docker.pkg.dev/PROJECT/REPOSITORY"
        )
    location, _, repository = found
    return repository, location


def _grant_command(settings: Settings, identity: Identity, grant: Grant, condition_file: Path | None) -> Command:
    role, member = grant.role_name(settings.project), identity.member
    condition: tuple[str, ...] = ("--condition-from-file", str(condition_file)) if condition_file else ("--condition", "None")
    why = f"{identity.key}: {grant.role} on the {grant.on}: {grant.why}"
    argv: tuple[str, ...]
    if grant.on == BUCKET:
        bucket = "gs://" + settings.bucket[len("gs://") :].split("/", 1)[0]
        argv = ("gcloud", "storage", "buckets", "add-iam-policy-binding", bucket, "--member", member, "--role", role, *condition)
    elif grant.on in (PROJECT, NETWORK_PROJECT):
        project = settings.network_project if grant.on == NETWORK_PROJECT else settings.project
        argv = ("gcloud", "projects", "add-iam-policy-binding", project, "--member", member, "--role", role, *condition)
    elif grant.on == RUNNER_ACCOUNT:
        argv = ("gcloud", "iam", "service-accounts", "add-iam-policy-binding", settings.service_account)
        argv += ("--project", settings.project, "--member", member, "--role", role)
    elif grant.on == REPOSITORY:
        repository, location = _repository(settings)
        argv = ("gcloud", "artifacts", "repositories", "add-iam-policy-binding", repository, "--project", settings.project)
        argv += ("--location", location, "--member", member, "--role", role)
    else:  # pragma: no cover - plan.py names only these
        raise ValueError(grant.on)
    return Command(argv, why)


def setup_plan(
    settings: Settings,
    catalog: Mapping[str, Job],
    output_dir: Path,
    release_account: str = "",
    trigger_account: str = "",
) -> SetupPlan:
    """The commands, in the order to run them, and the condition files they read."""
    people = identities(settings, catalog, release_account, trigger_account)
    _repository(settings)  # refuse a registry that is not Artifact Registry before anything
    bucket = "gs://" + settings.bucket[len("gs://") :].split("/", 1)[0]
    project = settings.project
    commands: list[Command] = []
    for person in people:
        name = person.account.split("@", 1)[0]
        commands.append(
            Command(
                (
                    "gcloud",
                    "iam",
                    "service-accounts",
                    "create",
                    name,
                    "--project",
                    project,
                    "--display-name",
                    f"mlbatch {person.key}",
                ),
                f"the {person.key} identity: {person.purpose}",
            )
        )
    for role in CUSTOM_ROLES:
        commands.append(
            Command(
                ("gcloud", "iam", "roles", "create", role.role_id, "--project", project, "--title", role.title)
                + ("--description", role.description, "--permissions", ",".join(role.permissions), "--stage", "GA"),
                f"custom role {role.role_id}: {', '.join(role.permissions)}",
            )
        )
    commands.append(
        Command(
            ("gcloud", "storage", "buckets", "update", bucket, "--uniform-bucket-level-access"),
            "IAM conditions on a bucket need uniform bucket-level access (no object ACLs)",
        )
    )
    files: dict[Path, str] = {}
    for person in people:
        for index, grant in enumerate(person.grants):
            path = None
            if grant.condition is not None:
                path = output_dir / f"{person.key}-{index}-{grant.role.rsplit('/', 1)[-1]}.json"
                condition = grant.condition
                files[path] = json.dumps(
                    {"title": condition.title, "description": condition.description, "expression": condition.expression}, indent=2
                )
            commands.append(_grant_command(settings, person, grant, path))
    notes = (
        "mlbatch identities for project "
        f"{project}: release {people[0].account}, runner {people[1].account}, trigger {people[2].account}",
        "print-only: nothing was run; read the commands, then run them as someone who may grant roles",
        "release protection: each release's manifest and code bundle get a Locked object retention, which no token",
        f"can undo, for release_retention_days (here {settings.release_retention_days}). The bucket must allow object",
        f"retention: a new one: gcloud storage buckets create {bucket} --enable-per-object-retention ...;",
        "an existing one: Cloud console, the bucket's Protection tab, Object retention (Google has no command for it)",
        "then check with: invoke iam.check --profile gcp",
    )
    return SetupPlan(people, tuple(commands), notes, files)


def write_condition_files(plan: SetupPlan) -> None:
    for path, text in plan.condition_files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def export(settings: Settings, output_dir: Path, release_account: str = "", trigger_account: str = "") -> str:
    """The script `invoke iam.setup` prints; its condition files written under `output_dir`
    (after every input was accepted: nothing is written for a refused one)."""
    from mlbatch.core.catalog import checkout_catalog

    plan = setup_plan(settings, checkout_catalog(settings.project_root), output_dir, release_account, trigger_account)
    write_condition_files(plan)
    return plan.script()
