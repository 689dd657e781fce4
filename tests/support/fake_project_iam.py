"""The IAM policy of a fake project: which member holds which role, and so which permission.

The fakes that act as a principal other than the caller read it: the fake Cloud Batch API
asks whether a job's VM service account may report its tasks' states. Roles and their
permissions as https://cloud.google.com/iam/docs/roles-permissions/batch lists them (only the
roles the fakes ask about). Nothing is granted until a test grants it, as in a new project.
"""

from __future__ import annotations

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    # "Reporter of Batch agent states": what Batch's agent on each job VM calls
    # projects.locations.state.report with, as the VM's service account.
    "roles/batch.agentReporter": frozenset({"batch.states.report"}),
    "roles/batch.jobsEditor": frozenset(
        {"batch.jobs.create", "batch.jobs.delete", "batch.jobs.get", "batch.jobs.list", "batch.tasks.get", "batch.tasks.list"}
    ),
}


class ProjectIam:
    def __init__(self) -> None:
        self.bindings: dict[str, set[str]] = {}  # role -> members ("serviceAccount:EMAIL", "user:EMAIL")

    def grant(self, member: str, role: str) -> None:
        if role not in ROLE_PERMISSIONS:
            raise ValueError(f"fake project IAM: role {role!r} is not modelled (known: {sorted(ROLE_PERMISSIONS)})")
        self.bindings.setdefault(role, set()).add(member)

    def holds(self, member: str, permission: str) -> bool:
        return any(member in self.bindings.get(role, ()) and permission in perms for role, perms in ROLE_PERMISSIONS.items())
