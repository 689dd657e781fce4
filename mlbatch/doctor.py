"""`invoke doctor`: is this profile ready to release and run? Every check in one table, like
`sky check`, and the exit code of the worst gap (README, "Exit codes").

gcp and test profiles: credentials (Application Default Credentials and the identity they
name), the APIs a release uses, the release's permissions, a run's permissions and network
(the run preflight: create instances, act as the runner, Private Google Access or Cloud NAT),
the bucket, the Docker engine (a release builds containers), the registry (the token login a
push makes) and Packer. local: the engine, the registry, the bucket, the base image, Packer.

Every check only reads; a check that fails does not stop the others. The worst gap ranks
111 (the identity may not do it) over 110 (a service unreachable or broken) over 100 (a
setting or a tool to fix); the table says what each gap is and how to close it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from mlbatch.core.bucket import file_bucket_dir, open_bucket
from mlbatch.core.errors import ExitCode, MlbatchError
from mlbatch.core.settings import Settings
from mlbatch.ui import columns

SEVERITY = (ExitCode.PERMISSION_DENIED, ExitCode.INFRA_FAILED, ExitCode.NOT_FOUND, ExitCode.BAD_INPUT)
OK = "ok"

T = TypeVar("T")  # what a preflight call lists as missing


@dataclasses.dataclass
class Check:
    name: str
    status: str  # ok, or the exit code's name of the gap
    detail: str
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def _run(name: str, check: Callable[[], str]) -> Check:
    """One check: its detail when it passes; the error's message and code when it does not."""
    try:
        return Check(name, OK, check())
    except MlbatchError as exc:
        return Check(name, exc.exit_code.name.lower().replace("_", " "), " ".join(str(exc).split()), int(exc.exit_code))
    except Exception as exc:  # noqa: BLE001 - a check that breaks is a gap to show, not a crash
        return Check(name, "infra failed", f"{type(exc).__name__}: {exc}", int(ExitCode.INFRA_FAILED))


def worst(checks: list[Check]) -> int:
    """The exit code of the worst gap (0 when every check passed)."""
    codes = {c.exit_code for c in checks if not c.ok}
    for code in SEVERITY:
        if code in codes:
            return int(code)
    return max(codes, default=0)


# --- the checks -------------------------------------------------------------------------------


def _engine() -> str:
    from mlbatch.local.infra import docker_client

    try:
        version = docker_client().version()
    except Exception as exc:  # noqa: BLE001 - docker's errors vary: any means no engine
        raise MlbatchError(f"no Docker engine answers ({exc}): start it (`invoke local.up` on the local profile)") from None
    return f"Docker {version.get('Version', '?')}"


def _local_registry(settings: Settings) -> str:
    from mlbatch.local.infra import registry_running

    if not registry_running(settings.registry):
        raise MlbatchError(f"registry {settings.registry} does not answer: `invoke local.up` starts it")
    return f"{settings.registry} answers"


def _bucket(settings: Settings) -> str:
    folder = file_bucket_dir(settings.bucket)
    if folder is not None and not folder.is_dir():
        raise MlbatchError(f"{settings.bucket}: the folder does not exist (`invoke local.up` makes it)", ExitCode.NOT_FOUND)
    try:
        releases = len({key.split("/")[1] for key in open_bucket(settings.bucket).list("releases")})
    except MlbatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - the storage client's errors: a gap with its words
        raise _google_error(exc, f"reading {settings.bucket}") from None
    return f"{settings.bucket} readable, {releases} release folder(s)"


def _base_image(settings: Settings) -> str:
    from mlbatch.local.infra import docker_client

    try:
        docker_client().images.get(settings.base_image)
    except Exception:  # noqa: BLE001 - NotFound, or no engine (said on its own row)
        raise MlbatchError(f"{settings.base_image} is not in the engine: `invoke local.up` pulls or builds it") from None
    return f"{settings.base_image} present"


def _packer(settings: Settings) -> str:
    from mlbatch.release import bake

    build = bake.packer_build()
    notes: list[str] = []
    bake.check_packer(settings, notes.append)
    return build.text + (f"; {notes[0]}" if notes else "")


def _google_error(exc: Exception, what: str) -> MlbatchError:
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.Unauthorized | gexc.Forbidden):
        return MlbatchError(f"{what}: {exc}", ExitCode.PERMISSION_DENIED)
    return MlbatchError(f"{what}: {type(exc).__name__}: {exc}", ExitCode.INFRA_FAILED)


class _Google:
    """The gcp checks, sharing one set of credentials."""

    def __init__(self, settings: Settings):
        from mlbatch.gcp.clients import Clients

        self.settings = settings
        self.clients = Clients(settings)
        self.credentials: Any = None

    def credentials_check(self) -> str:
        from mlbatch.core import gcp_base

        self.credentials = self.clients.credentials
        return f"Application Default Credentials of {gcp_base.principal(self.credentials)}"

    def _need_credentials(self) -> Any:
        if self.credentials is None:
            raise MlbatchError("not checked: no credentials (see above)", ExitCode.PERMISSION_DENIED)
        return self.credentials

    def _ask(self, what: str, call: Callable[[Settings, Any], list[T]]) -> list[T]:
        """What a preflight call finds missing; its errors as gaps in the house's words."""
        self._need_credentials()
        try:
            return call(self.settings, self.clients)
        except MlbatchError:
            raise
        except Exception as exc:  # noqa: BLE001 - google-api-core's errors: a gap with their words
            raise _google_error(exc, what) from None

    def apis(self) -> str:
        from mlbatch.release import preflight

        missing = self._ask("asking Service Usage", preflight.missing_services)
        if missing:
            enable = " ".join(missing)
            raise MlbatchError(
                f"not enabled: {', '.join(missing)}: gcloud services enable {enable} --project {self.settings.project}",
                ExitCode.PERMISSION_DENIED,
            )
        return f"{len(preflight.SERVICES)} APIs enabled"

    def release_permissions(self) -> str:
        from mlbatch.core import gcp_base
        from mlbatch.release import preflight

        missing = self._ask("asking Resource Manager", preflight.missing_permissions)
        if missing:
            grants = sorted({f"{role} on {where}" for _, role, where in missing})
            raise MlbatchError(
                f"{gcp_base.principal(self.credentials)} lacks {', '.join(p for p, _, _ in missing)}: grant {', '.join(grants)}",
                ExitCode.PERMISSION_DENIED,
            )
        return f"all {len(preflight.ASKED)} held"

    def run_preflight(self) -> str:
        from mlbatch.providers import get_provider

        self._need_credentials()
        get_provider(self.settings).preflight()
        network = "Cloud NAT (cloud_nat: true)" if self.settings.cloud_nat else "Private Google Access on the subnet"
        return f"may create instances and act as {self.settings.service_account}; {network}"

    def registry(self) -> str:
        import docker

        from mlbatch.core import gcp_base
        from mlbatch.local.infra import docker_client

        credentials = self._need_credentials()
        host = self.settings.registry.split("/")[0]
        try:
            docker_client().login(registry=host, username=gcp_base.REGISTRY_USER, password=credentials.token, reauth=True)
        except docker.errors.APIError as exc:
            raise MlbatchError(
                f"{host} refused the token of {gcp_base.principal(credentials)}: {exc.explanation} "
                "(grant roles/artifactregistry.writer on the repository)",
                ExitCode.PERMISSION_DENIED,
            ) from None
        return f"{host} accepts the token ({gcp_base.REGISTRY_USER})"


def checks(settings: Settings) -> list[Check]:
    """Every check of the profile, in order; none stops the others."""
    if settings.is_local:
        return [
            _run("engine", _engine),
            _run("registry", lambda: _local_registry(settings)),
            _run("bucket", lambda: _bucket(settings)),
            _run("base image", lambda: _base_image(settings)),
            _run("packer", lambda: _packer(settings)),
        ]
    google = _Google(settings)
    return [
        _run("credentials", google.credentials_check),
        _run("APIs", google.apis),
        _run("release permissions", google.release_permissions),
        _run("run permissions, network", google.run_preflight),
        _run("bucket", lambda: _bucket(settings)),
        _run("engine", _engine),
        _run("registry", google.registry),
        _run("packer", lambda: _packer(settings)),
    ]


def report(settings: Settings) -> dict[str, Any]:
    found = checks(settings)
    return {
        "profile": settings.profile,
        "checks": [dataclasses.asdict(c) for c in found],
        "exit_code": worst(found),
    }


def render(data: dict[str, Any]) -> str:
    rows = [
        (c["name"], c["status"] if c["exit_code"] == 0 else f"{c['status']} ({c['exit_code']})", c["detail"])
        for c in data["checks"]
    ]
    gaps = sum(1 for c in data["checks"] if c["exit_code"])
    verdict = f"profile {data['profile']}: " + (f"{gaps} gap(s), exit {data['exit_code']}" if gaps else "ready")
    return columns(("CHECK", "STATUS", "DETAIL"), rows) + verdict + "\n"
