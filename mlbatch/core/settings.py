"""Settings: one validated object built from the `mlbatch` section of invoke's config.

invoke merges invoke.yaml, user config files and INVOKE_MLBATCH_* environment variables;
this module turns the result into a frozen `Settings` and refuses bad values once, early,
with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlbatch.core.bucket import file_bucket_dir, file_bucket_uri
from mlbatch.core.errors import BadInput
from mlbatch.core.names import GCE_NAME

PROFILES = ("local", "gcp", "test")  # test: the gcp provider against emulators and the fake Compute API
# Profiles allowed to talk to emulators and plain-http endpoints (docs/architecture.md, "Settings").
EMULATOR_PROFILES = ("local", "test")
# Endpoints of emulated Google APIs: only the test profile may set them.
TEST_ENDPOINTS = ("resource_manager_endpoint", "service_usage_endpoint", "batch_endpoint", "oslogin_endpoint")
_ZONE = re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+\d+$")


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
    # gcp only
    project: str = ""
    region: str = ""
    zones: tuple[str, ...] = ()
    service_account: str = ""
    network: str = "default"
    subnetwork: str = ""
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


def load_settings(config: Mapping[str, Any], project_root: Path, env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from invoke's `mlbatch` config section."""
    env = os.environ if env is None else env
    profile = str(config.get("profile") or "local")
    if profile not in PROFILES:
        raise BadInput(f"invalid mlbatch.profile {profile!r}: expected one of {', '.join(PROFILES)}")
    profiles = config.get("profiles") or {}
    values: Mapping[str, Any] = profiles.get(profile) or {}

    def get(key: str) -> Any:
        """The profile's value, else the Settings field's default (the one place defaults are written)."""
        default = DEFAULTS.get(key, "")
        value = values.get(key, default)
        return default if value is None else value

    state_dir = _abs(project_root, str(config.get("state_dir") or ".mlbatch")).resolve()
    bucket = str(get("bucket"))
    folder = file_bucket_dir(bucket)
    if folder is not None:
        bucket = file_bucket_uri(_abs(project_root, str(folder)).resolve())
    elif not re.match(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?$", bucket):
        raise BadInput(
            f"invalid mlbatch.profiles.{profile}.bucket {bucket!r}: expected file:///path or gs://bucket-name[/prefix]"
        )
    ca_bundle = get("ca_bundle")
    settings = Settings(
        profile=profile,
        project_root=project_root,
        state_dir=state_dir,
        bucket=bucket,
        registry=str(get("registry")).rstrip("/"),
        base_image=str(get("base_image")),
        image_family=str(get("image_family")),
        ca_bundle=_abs(project_root, str(ca_bundle)) if ca_bundle else None,
        project=str(get("project")),
        region=str(get("region")),
        zones=tuple(get("zones") or ()),
        service_account=str(get("service_account")),
        network=str(get("network")),
        subnetwork=str(get("subnetwork")),
        compute_endpoint=str(get("compute_endpoint")),
        batch_endpoint=str(get("batch_endpoint")),
        resource_manager_endpoint=str(get("resource_manager_endpoint")),
        service_usage_endpoint=str(get("service_usage_endpoint")),
        cloud_nat=get("cloud_nat"),
        bake_zone=str(get("bake_zone")),
        source_image_family=str(get("source_image_family")),
        source_image_project=str(get("source_image_project")),
        bake_machine_type=str(get("bake_machine_type")),
        internal_ip=get("internal_ip"),
        use_iap=get("use_iap"),
        os_login=get("os_login"),
        oslogin_endpoint=str(get("oslogin_endpoint")),
        ssh_port=get("ssh_port"),
        price_table=_abs(project_root, str(get("price_table"))) if get("price_table") else None,
        release_retention_days=get("release_retention_days"),
    )
    _validate(settings, env)
    return settings


def _validate(s: Settings, env: Mapping[str, str]) -> None:
    where = f"mlbatch.profiles.{s.profile}"
    if not s.registry:
        raise BadInput(f"{where}.registry is empty: expected host[:port][/path], e.g. 127.0.0.1:5000")
    if not GCE_NAME.match(s.image_family):
        raise BadInput(f"invalid {where}.image_family {s.image_family!r}: expected a GCE name, e.g. mlbatch")
    if s.ca_bundle is not None and not s.ca_bundle.is_file():
        raise BadInput(f"{where}.ca_bundle {str(s.ca_bundle)!r} is not a file: expected a PEM bundle or null")
    if s.price_table is not None and not s.price_table.is_file():
        raise BadInput(
            f"{where}.price_table {str(s.price_table)!r} is not a file: expected a YAML like mlbatch/run/prices.yaml, or null"
        )
    if not isinstance(s.cloud_nat, bool):
        raise BadInput(f"invalid {where}.cloud_nat {s.cloud_nat!r}: expected true or false")
    if s.profile not in EMULATOR_PROFILES:
        if env.get("STORAGE_EMULATOR_HOST"):
            raise BadInput(
                f"STORAGE_EMULATOR_HOST is set but profile {s.profile!r} is not local: unset it, or use the local profile"
            )
        if s.compute_endpoint:
            raise BadInput(f"{where}.compute_endpoint {s.compute_endpoint!r} is for tests: refused outside the test profile")
    if s.profile != "test":
        for key in TEST_ENDPOINTS:
            if getattr(s, key):
                raise BadInput(f"{where}.{key} {getattr(s, key)!r} is for tests: refused outside the test profile")
    if s.profile in ("gcp", "test"):
        if not GCE_NAME.match(s.project or "-"):
            raise BadInput(f"invalid {where}.project {s.project!r}: expected a GCP project id, e.g. my-ml-project")
        if not _REGION.match(s.region):
            raise BadInput(f"invalid {where}.region {s.region!r}: expected e.g. europe-west4")
        if not s.zones or not all(_ZONE.match(z) and z.startswith(s.region + "-") for z in s.zones):
            raise BadInput(f"invalid {where}.zones {list(s.zones)!r}: expected zones of {s.region}, e.g. [{s.region}-a]")
        if not s.bucket.startswith("gs://"):
            raise BadInput(f"invalid {where}.bucket {s.bucket!r}: the {s.profile} profile needs gs://bucket-name")
        if not re.match(r"^[a-z0-9-]+@[a-z0-9-]+\.iam\.gserviceaccount\.com$", s.service_account):
            raise BadInput(
                f"invalid {where}.service_account {s.service_account!r}: expected NAME@PROJECT.iam.gserviceaccount.com"
            )
        _validate_bake(s, where)
    days = s.release_retention_days
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 36500:
        raise BadInput(f"invalid {where}.release_retention_days {days!r}: expected whole days from 0 (no lock) to 36500")
    if days and not s.bucket.startswith("gs://"):
        raise BadInput(f"{where}.release_retention_days {days} needs a gs:// bucket (object retention is Cloud Storage's); set 0")


def bake_zone(s: Settings) -> str:
    return s.bake_zone or s.zones[0]


def _validate_bake(s: Settings, where: str) -> None:
    """The googlecompute bake's settings (gcp and test profiles)."""
    if s.bake_zone and not (_ZONE.match(s.bake_zone) and s.bake_zone.startswith(s.region + "-")):
        raise BadInput(f"invalid {where}.bake_zone {s.bake_zone!r}: expected a zone of {s.region}, e.g. {s.region}-a, or null")
    for key in ("source_image_family", "source_image_project", "bake_machine_type"):
        if not GCE_NAME.match(getattr(s, key)):
            example = DEFAULTS[key]
            raise BadInput(f"invalid {where}.{key} {getattr(s, key)!r}: expected a GCE name, e.g. {example}")
    for key in ("internal_ip", "use_iap", "os_login"):
        if not isinstance(getattr(s, key), bool):
            raise BadInput(f"invalid {where}.{key} {getattr(s, key)!r}: expected true or false")
    if not (s.internal_ip or s.use_iap):
        raise BadInput(
            f"{where}: internal_ip and use_iap are both false: the build VM has no external IP, "
            "so Packer must reach it by its internal address or through IAP; set one to true"
        )
    if isinstance(s.ssh_port, bool) or not isinstance(s.ssh_port, int) or not 0 < s.ssh_port < 65536:
        raise BadInput(f"invalid {where}.ssh_port {s.ssh_port!r}: expected a TCP port, e.g. 22")
