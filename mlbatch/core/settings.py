"""Settings: one validated object built from the `mlbatch` section of invoke's config.

invoke merges invoke.yaml, user config files and INVOKE_MLBATCH_* environment variables;
this module validates the chosen profile's block with a schema (`ProfileSettings`,
pydantic), reports every bad key at once with its path and the form expected
(`invalid mlbatch.profiles.gcp.zones[1] 'us-east1-b': expected a zone of europe-west4, ...`),
and turns it into a frozen `Settings`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, ValidationInfo
from pydantic import field_validator as check

from mlbatch.core.bucket import file_bucket_dir, file_bucket_uri
from mlbatch.core.errors import BadInput
from mlbatch.core.names import GCE_NAME, check_job_name
from mlbatch.core.schema import joined, problem, problems, whole
from mlbatch.core.versions import parse_version

PROFILES = ("local", "gcp", "test")  # test: the gcp provider against emulators and the fake Compute API
# Profiles allowed to talk to emulators and plain-http endpoints (docs/architecture.md, "Settings").
EMULATOR_PROFILES = ("local", "test")
# Endpoints of emulated Google APIs: only the test profile may set them.
TEST_ENDPOINTS = (
    "resource_manager_endpoint", "service_usage_endpoint", "batch_endpoint", "oslogin_endpoint", "pubsub_endpoint",
)  # fmt: skip
_ZONE = re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+\d+$")
_GS_BUCKET = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?$")
# A project id: 6-30 lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen.
_PROJECT_ID = r"[a-z][-a-z0-9]{4,28}[a-z0-9]"
# The documented forms of a service account's email (https://cloud.google.com/iam/docs/service-account-types):
# user-managed NAME@PROJECT_ID.iam.gserviceaccount.com (PROJECT_ID.DOMAIN for a domain-scoped project),
# the Compute Engine default PROJECT_NUMBER-compute@developer.gserviceaccount.com, and the App Engine
# default PROJECT_ID@appspot.gserviceaccount.com.
_SERVICE_ACCOUNT = re.compile(
    rf"^(?:{_PROJECT_ID}@{_PROJECT_ID}(?:\.[a-z0-9][-a-z0-9.]*[a-z0-9])?\.iam\.gserviceaccount\.com"
    r"|[0-9]{6,20}-compute@developer\.gserviceaccount\.com"
    rf"|{_PROJECT_ID}@appspot\.gserviceaccount\.com)$"
)
SERVICE_ACCOUNT_FORMS = (
    "NAME@PROJECT.iam.gserviceaccount.com, PROJECT_NUMBER-compute@developer.gserviceaccount.com "
    "or PROJECT@appspot.gserviceaccount.com"
)
# An IAM principal named one by one (https://cloud.google.com/iam/docs/principal-identifiers):
# never allUsers or allAuthenticatedUsers.
_IAM_MEMBER = re.compile(r"^(user|serviceAccount|group):[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
TRIGGER_MAX_AGE_LIMIT = 7 * 24 * 3600  # Pub/Sub keeps an unacknowledged message 7 days by default
_TOPIC = re.compile(r"^projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/topics/[A-Za-z][-A-Za-z0-9_.~+%]{2,254}$")


@dataclasses.dataclass(frozen=True)
class Settings:
    profile: str
    project_root: Path
    state_dir: Path  # local state: registry data, bucket folder, instance work dirs
    bucket: str  # file:///abs/path or gs://name[/prefix]
    registry: str  # host[:port]/path where containers are pushed
    base_image: str = "debian:bookworm-slim"  # FROM of the VM image bake and of our containers
    image_family: str = "mlbatch"
    ca_bundle: Path | None = None  # extra CA bundle for images that fetch over TLS
    # An image with the same inputs is reused only while younger than this: a release then bakes
    # afresh and takes the OS's fixes of the day (docs/architecture.md, "Updates"). 0: always bake.
    max_image_age_days: int = 30
    # gcp only
    project: str = ""
    region: str = ""
    zones: tuple[str, ...] = ()
    service_account: str = ""
    network: str = "default"
    subnetwork: str = ""
    # Shared VPC: the host project that owns network and subnetwork (load_settings: the project when unset)
    network_project: str = ""
    compute_endpoint: str = ""  # tests point this at the fake Compute API
    batch_endpoint: str = ""  # tests point this at the fake Cloud Batch API (sweeps)
    # The release preflight's APIs; tests point them at tests/support/fake_iam.py
    resource_manager_endpoint: str = ""
    service_usage_endpoint: str = ""
    # The VPC has Cloud NAT: instances without an external IP reach Google APIs and registries
    # through it, so the run preflight does not ask the subnet for Private Google Access.
    cloud_nat: bool = False
    # the VM image bake (googlecompute); see invoke.yaml
    bake_zone: str = ""  # "" = the first of zones
    source_image_family: str = "debian-12"
    source_image_project: str = "debian-cloud"
    bake_machine_type: str = "e2-standard-2"
    internal_ip: bool = True  # the build VM gets no external IP; Packer connects to its internal address
    use_iap: bool = False  # or through an IAP tunnel (needs gcloud where Packer runs)
    # OS Login (org policy compute.requireOsLogin makes VMs ignore ssh-keys metadata): the bake and
    # the image test import their throw-away key into the caller's login profile instead.
    os_login: bool = False
    oslogin_endpoint: str = ""  # tests point this at tests/support/fake_oslogin.py
    ssh_port: int = 22  # the build VM's sshd (the test profile's fake guests listen on a loopback port)
    price_table: Path | None = None  # runs.show's cost estimate; None: mlbatch/run/prices.yaml
    # When a run or sweep a controller follows ends, a JSON summary goes to this webhook and/or
    # Pub/Sub topic (mlbatch.run.notify); a failing notification never changes the run's exit code.
    notify_webhook: str = ""
    notify_topic: str = ""  # projects/PROJECT/topics/TOPIC
    pubsub_endpoint: str = ""  # tests point this at tests/support/fake_pubsub.py
    # The Pub/Sub Cloud Function (docs/architecture.md, "Triggers"): what a deployment trusts,
    # carried in its env.yaml by `invoke schedule.export` and read per message.
    trigger_jobs: tuple[str, ...] = ()  # jobs a message may start; none: every message is refused
    trigger_version: str = "latest"  # "latest" (never a pre-release) or the one version it runs
    trigger_max_age_seconds: int = 3600  # an older message (its publishTime) is acknowledged as stale
    trigger_service_account: str = ""  # the function's own identity; never the runner's
    trigger_invoker_service_account: str = ""  # the Eventarc trigger's identity: it may invoke the function only
    trigger_publishers: tuple[str, ...] = ()  # IAM principals given roles/pubsub.publisher on the topic
    # gs:// only: each release's manifest and code bundle get a Locked object retention for this
    # many days, which no token can undo (the bucket must allow object retention); 0: none.
    release_retention_days: int = 0

    @property
    def is_local(self) -> bool:
        return self.profile == "local"


# Every setting's default, from the Settings fields above (invoke.yaml restates some for its
# readers; tests/unit/test_settings.py holds them to these).
DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings) if f.default is not dataclasses.MISSING}


def _abs(root: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (root / path)


def _gcp(info: ValidationInfo) -> bool:
    """Whether the profile being validated runs on Google Cloud (gcp, or test against emulators)."""
    return (info.context or {}).get("profile") in ("gcp", "test")


def _where(info: ValidationInfo) -> str:
    return f"mlbatch.profiles.{(info.context or {}).get('profile')}.{info.field_name}"


def _http_url(url: str) -> bool:
    """https, or http to a loopback address (a test's receiver)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    try:
        return parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


# Settings the gcp and test profiles need in a fixed form: the pattern, and the form a message names.
GCP_FORMS = {
    "project": (GCE_NAME, "a GCP project id, e.g. my-ml-project"),
    "region": (_REGION, "a region, e.g. europe-west4"),
    "service_account": (_SERVICE_ACCOUNT, SERVICE_ACCOUNT_FORMS),
    **{
        key: (GCE_NAME, f"a GCE name, e.g. {DEFAULTS[key]}")
        for key in ("source_image_family", "source_image_project", "bake_machine_type")
    },
}


class ProfileSettings(BaseModel):
    """One block of `mlbatch.profiles` as written (the Settings fields but the three above it:
    a test holds the two lists together). An absent or null key takes the Settings field's
    default; each description is the form a value must have."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    bucket: str = Field(description="file:///path or gs://bucket-name[/prefix]")
    registry: str = Field(description="host[:port][/path], e.g. 127.0.0.1:5000")
    base_image: str = Field(description="an image reference, e.g. debian:bookworm-slim")
    image_family: str = Field(description="a GCE name, e.g. mlbatch")
    ca_bundle: str = Field(description="a PEM bundle file, or null")
    max_image_age_days: StrictInt = Field(ge=0, le=3650, description="days from 0 (always bake) to 3650, e.g. 30")
    project: str = Field(description="a GCP project id, e.g. my-ml-project")
    region: str = Field(description="a region, e.g. europe-west4")
    zones: list[StrictStr] = Field(description="a list of zones of the region, e.g. [europe-west4-a]")
    service_account: str = Field(description=SERVICE_ACCOUNT_FORMS)
    network: str = Field(description="a VPC network name, e.g. default")
    subnetwork: str = Field(description="a subnetwork name, or null (auto mode: the network's)")
    network_project: str = Field(
        description="the project id of the Shared VPC host project that owns network and subnetwork, "
        "or null for the project itself"
    )
    compute_endpoint: str = Field(description="null (tests: the fake Compute API)")
    batch_endpoint: str = Field(description="null (tests: the fake Cloud Batch API)")
    resource_manager_endpoint: str = Field(description="null (tests: the fake Resource Manager API)")
    service_usage_endpoint: str = Field(description="null (tests: the fake Service Usage API)")
    cloud_nat: StrictBool = Field(description="true or false")
    bake_zone: str = Field(description="a zone of the region, or null (the first of zones)")
    source_image_family: str = Field(description="a GCE name, e.g. debian-12")
    source_image_project: str = Field(description="a GCE name, e.g. debian-cloud")
    bake_machine_type: str = Field(description="a GCE name, e.g. e2-standard-2")
    internal_ip: StrictBool = Field(description="true or false")
    use_iap: StrictBool = Field(description="true or false")
    os_login: StrictBool = Field(description="true or false")
    oslogin_endpoint: str = Field(description="null (tests: the fake OS Login API)")
    ssh_port: StrictInt = Field(ge=1, le=65535, description="a TCP port, e.g. 22")
    price_table: str = Field(description="a YAML file like mlbatch/run/prices.yaml, or null")
    notify_webhook: str = Field(description="an https:// URL (http:// only to a loopback address), or null")
    notify_topic: str = Field(description="projects/PROJECT/topics/TOPIC, or null")
    pubsub_endpoint: str = Field(description="null (tests: the fake Pub/Sub API)")
    trigger_jobs: list[StrictStr] = Field(description="a list of strings, e.g. [train-digits]")
    trigger_version: str = Field(description="latest, or a version such as v1.4.0")
    trigger_max_age_seconds: StrictInt = Field(
        ge=60, le=TRIGGER_MAX_AGE_LIMIT, description=f"seconds from 60 to {TRIGGER_MAX_AGE_LIMIT}, e.g. 3600"
    )
    trigger_service_account: str = Field(description=f"{SERVICE_ACCOUNT_FORMS}, or null")
    trigger_invoker_service_account: str = Field(description=f"{SERVICE_ACCOUNT_FORMS}, or null")
    trigger_publishers: list[StrictStr] = Field(
        description="named principals, e.g. [serviceAccount:ci@my-ml-project.iam.gserviceaccount.com]"
    )
    release_retention_days: StrictInt = Field(ge=0, le=36500, description="whole days from 0 (no lock) to 36500")

    @check("*", mode="before")
    @classmethod
    def _defaulted(cls, value: Any, info: ValidationInfo) -> Any:
        """An absent or null key: the Settings field's default (the one place defaults are written)."""
        if value is None:
            value = DEFAULTS.get(info.field_name or "", "")
        return "" if value is None else value  # a path left unset

    @check("bucket")
    @classmethod
    def _bucket(cls, bucket: str, info: ValidationInfo) -> str:
        if file_bucket_dir(bucket) is None and not _GS_BUCKET.match(bucket):
            raise problem("file:///path or gs://bucket-name[/prefix]")
        if _gcp(info) and not bucket.startswith("gs://"):
            raise problem(f"gs://bucket-name (the {info.context['profile']} profile needs gs://)")  # type: ignore[index]
        return bucket

    @check("registry")
    @classmethod
    def _registry(cls, registry: str) -> str:
        if not registry.rstrip("/"):
            raise problem("host[:port][/path], e.g. 127.0.0.1:5000 (it is empty)")
        return registry.rstrip("/")

    @check("image_family")
    @classmethod
    def _family(cls, family: str) -> str:
        if not GCE_NAME.match(family):
            raise problem("a GCE name, e.g. mlbatch")
        return family

    @check("ca_bundle", "price_table")
    @classmethod
    def _file(cls, value: str, info: ValidationInfo) -> str:
        if value and not _abs((info.context or {}).get("root", Path.cwd()), value).is_file():
            what = "a PEM bundle" if info.field_name == "ca_bundle" else "a YAML like mlbatch/run/prices.yaml"
            raise problem(f"{what}, or null; {value!r} is not a file")
        return value

    @check("compute_endpoint", *TEST_ENDPOINTS)
    @classmethod
    def _test_only(cls, endpoint: str, info: ValidationInfo) -> str:
        allowed = EMULATOR_PROFILES if info.field_name == "compute_endpoint" else ("test",)
        if endpoint and (info.context or {}).get("profile") not in allowed:
            raise problem("null: an endpoint of an emulated API is for tests: refused outside the test profile")
        return endpoint

    @check(*GCP_FORMS)
    @classmethod
    def _gcp_form(cls, value: str, info: ValidationInfo) -> str:
        """The values the gcp and test profiles need in a fixed form (GCP_FORMS)."""
        pattern, form = GCP_FORMS[info.field_name or ""]
        if _gcp(info) and not pattern.match(value or "-"):
            raise problem(form)
        return value

    @check("network_project")
    @classmethod
    def _network_project(cls, project: str, info: ValidationInfo) -> str:
        if _gcp(info) and project and not re.fullmatch(_PROJECT_ID, project):
            raise problem("the project id of the Shared VPC host project that owns network and subnetwork, or null")
        return project

    @check("zones")
    @classmethod
    def _zones(cls, zones: list[str], info: ValidationInfo) -> list[str]:
        region = info.data.get("region")
        if not _gcp(info) or region is None:
            return zones  # the region is wrong already: said there
        if not zones:
            raise problem(f"zones of {region}, e.g. [{region}-a]")
        bad = [
            f"invalid {_where(info)}[{i}] {zone!r}: expected a zone of {region}, e.g. {region}-a"
            for i, zone in enumerate(zones)
            if not (_ZONE.match(zone) and zone.startswith(region + "-"))
        ]
        if bad:
            raise whole("\n".join(bad))
        return zones

    @check("bake_zone")
    @classmethod
    def _bake_zone(cls, zone: str, info: ValidationInfo) -> str:
        region = info.data.get("region", "")
        if _gcp(info) and zone and not (_ZONE.match(zone) and zone.startswith(region + "-")):
            raise problem(f"a zone of {region}, e.g. {region}-a, or null")
        return zone

    @check("use_iap")
    @classmethod
    def _reachable(cls, use_iap: bool, info: ValidationInfo) -> bool:
        if _gcp(info) and info.data.get("internal_ip") is False and not use_iap:
            where = f"mlbatch.profiles.{info.context['profile']}"  # type: ignore[index]
            raise whole(
                f"{where}: internal_ip and use_iap are both false: the build VM has no external IP, "
                "so Packer must reach it by its internal address or through IAP; set one to true"
            )
        return use_iap

    @check("notify_webhook")
    @classmethod
    def _webhook(cls, url: str, info: ValidationInfo) -> str:
        if url and not _http_url(url):
            raise whole(f"invalid {_where(info)}: expected an https:// URL (http:// only to a loopback address), or null")
        return url  # the URL itself is never shown: a webhook URL is a secret (README, "Security")

    @check("notify_topic")
    @classmethod
    def _topic(cls, topic: str) -> str:
        if topic and not _TOPIC.match(topic):
            raise problem("projects/PROJECT/topics/TOPIC, or null")
        return topic

    # --- the Pub/Sub function's trust (every profile: the tests serve it on the local one) ---

    @check("trigger_jobs")
    @classmethod
    def _trigger_jobs(cls, jobs: list[str], info: ValidationInfo) -> list[str]:
        for job in jobs:
            try:
                check_job_name(job)
            except BadInput as exc:
                raise whole(f"invalid {_where(info)}: {exc}") from None
        return jobs

    @check("trigger_version")
    @classmethod
    def _trigger_version(cls, version: str, info: ValidationInfo) -> str:
        if version != "latest":
            try:
                parse_version(version)
            except BadInput as exc:
                raise whole(f"invalid {_where(info)}: {exc}, or latest") from None
        return version

    @check("trigger_service_account", "trigger_invoker_service_account")
    @classmethod
    def _identity(cls, account: str, info: ValidationInfo) -> str:
        """Each identity an account of its own: the runner, the function, the trigger that invokes it."""
        if not account:
            return account
        if not _SERVICE_ACCOUNT.match(account):
            raise problem(f"{SERVICE_ACCOUNT_FORMS}, or null")
        others = ("service_account", "trigger_service_account")
        same = [key for key in others if key != info.field_name and info.data.get(key) == account]
        if same:
            raise whole(
                f"invalid {_where(info)} {account!r}: it is also {same[0]}; each identity is an account of its own "
                "(least privilege: the runner, the function and the trigger that invokes it)"
            )
        return account

    @check("trigger_publishers")
    @classmethod
    def _publishers(cls, members: list[str], info: ValidationInfo) -> list[str]:
        for member in members:
            if not _IAM_MEMBER.match(member):
                raise whole(
                    f"invalid {_where(info)} entry {member!r}: expected a named principal, "
                    "e.g. serviceAccount:ci@my-ml-project.iam.gserviceaccount.com, user:... or group:..."
                )
        return members

    @check("release_retention_days")
    @classmethod
    def _lockable(cls, days: int, info: ValidationInfo) -> int:
        if days and not str(info.data.get("bucket", "")).startswith("gs://"):
            raise problem("0 with a file:// bucket (object retention is Cloud Storage's)")
        return days


class MlbatchConfig(BaseModel):
    """invoke's `mlbatch` section: which profile, where local state goes, and the profiles."""

    model_config = ConfigDict(extra="forbid")

    profile: Literal["local", "gcp", "test"] | None = Field(None, description="one of local, gcp, test (default local)")
    state_dir: StrictStr | None = Field(None, description="a folder for local state (default .mlbatch)")
    profiles: dict[str, dict[str, Any] | None] | None = Field(None, description="a block of settings per profile")


def load_settings(config: Mapping[str, Any], project_root: Path, env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from invoke's `mlbatch` config section; BadInput (100) naming every bad key."""
    env = os.environ if env is None else env
    try:
        top = MlbatchConfig.model_validate(dict(config))
    except ValidationError as exc:
        raise BadInput(
            joined("", problems(exc, MlbatchConfig, "mlbatch", "invalid {where} {value}: expected {form}", {}))
        ) from None
    profile = top.profile or "local"
    where = f"mlbatch.profiles.{profile}"
    lines: list[str] = []
    if profile not in EMULATOR_PROFILES and env.get("STORAGE_EMULATOR_HOST"):
        lines.append(f"STORAGE_EMULATOR_HOST is set but profile {profile!r} is not local: unset it, or use the local profile")
    raw = dict((top.profiles or {}).get(profile) or {})
    for name in ProfileSettings.model_fields:
        raw.setdefault(name, None)
    try:
        values = ProfileSettings.model_validate(raw, context={"profile": profile, "root": project_root})
    except ValidationError as exc:
        lines += problems(exc, ProfileSettings, where, "invalid {where} {value}: expected {form}", {})
    if lines:
        raise BadInput(joined("", lines))
    state_dir = _abs(project_root, top.state_dir or ".mlbatch").resolve()
    folder = file_bucket_dir(values.bucket)
    bucket = file_bucket_uri(_abs(project_root, str(folder)).resolve()) if folder is not None else values.bucket
    fields = values.model_dump()
    fields.update(
        bucket=bucket,
        zones=tuple(values.zones),
        network_project=values.network_project or values.project,
        trigger_jobs=tuple(values.trigger_jobs),
        trigger_publishers=tuple(values.trigger_publishers),
        ca_bundle=_abs(project_root, values.ca_bundle) if values.ca_bundle else None,
        price_table=_abs(project_root, values.price_table) if values.price_table else None,
    )
    return Settings(profile=profile, project_root=project_root, state_dir=state_dir, **fields)


def bake_zone(s: Settings) -> str:
    return s.bake_zone or s.zones[0]
