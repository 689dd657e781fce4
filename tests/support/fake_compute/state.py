"""The fake's state: what to break (Faults) and what an instance is (FakeInstance)."""

from __future__ import annotations

import dataclasses
import http.server
from pathlib import Path
from typing import Any

from tests.support.fake_vm.metadata import MetadataFaults

CONTAINER_LABEL = "mlbatch-fake-compute"


@dataclasses.dataclass
class Faults(MetadataFaults):
    """What to break, set per test (metadata faults: MetadataFaults). Times are in seconds of the fake's clock."""

    stockout_zones: set[str] = dataclasses.field(default_factory=set)
    quota_exceeded: bool = False
    forbidden: bool = False
    http_burst: list[int] = dataclasses.field(default_factory=list)  # statuses for the next requests
    lose_insert_responses: int = 0  # inserts performed whose response is then lost (503)
    preempt_attempts: dict[int, float] = dataclasses.field(default_factory=dict)  # attempt -> seconds after start
    early_waits: int = 0  # operations.wait calls that return at once, not DONE
    serial_buffer_bytes: int | None = None  # keep only the newest N bytes of the serial port
    # Synchronous errors by reason (errors.REASONS), per method id: {"instances.insert": ["rateLimitExceeded"]}.
    reply_errors: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    unsupported_zones: set[str] = dataclasses.field(default_factory=set)  # inserts end in UNSUPPORTED_OPERATION
    operation_seconds: float = 0.0  # extra time every insert/delete takes before its operation is DONE
    # The longest a zoneOperations/globalOperations.wait holds before it answers, DONE or not: "waits for
    # no more than the default deadline (2 minutes)" (compute/docs/reference/rest/v1/globalOperations/wait).
    wait_hold: float = 120.0
    delete_race_in_operation: bool = False  # a second delete is accepted and its operation ends in 404
    page_size: int = 500  # the most items a list page holds (the API may return fewer than maxResults)


@dataclasses.dataclass
class Latencies:
    """How long Compute takes to finish an image operation, in seconds of the fake's clock
    (`fake.advance` skips ahead). The defaults are as slow as the real service, so a caller must
    outlast a client timeout of 60 s: creating an image copies a disk and "can take several
    minutes" (https://cloud.google.com/compute/docs/images/create-custom); the documentation gives
    no figure for a deprecation, and the fake makes it as slow, on the safe side. A test that is not
    about the wait sets them short."""

    image_insert: float = 90.0  # images.insert (sourceImage or sourceDisk): PENDING until DONE
    image_deprecate: float = 65.0  # images.deprecate: the new state shows once DONE
    image_delete: float = 5.0  # images.delete: DELETING until DONE, then gone
    # Instances, in real seconds: 0 by default (a run's tests are not about the cloud's speed); the
    # launch benchmark (tests/bench/launch_gcp.py) sets the figures users report, cited there.
    instance_insert: float = 0.0  # instances.insert: PROVISIONING until STAGING, then RUNNING (its operation DONE)
    instance_delete: float = 0.0  # instances.delete: the guest is shut down, the instance STOPPING that long, then gone

    @classmethod
    def quick(cls) -> Latencies:
        """For tests that are not about how long the wait is: operations still RUNNING when the
        insert, deprecate or delete returns (so the caller waits), DONE within a fraction of a second."""
        return cls(image_insert=0.2, image_deprecate=0.1, image_delete=0.05)


@dataclasses.dataclass
class FakeInstance:
    zone: str
    body: dict[str, Any]
    status: str = "PROVISIONING"
    created: float = 0.0
    container: str = ""
    serial: bytearray = dataclasses.field(default_factory=bytearray)
    serial_dropped: int = 0  # bytes rolled out of the buffer
    metadata_server: http.server.ThreadingHTTPServer | None = None
    workdir: Path | None = None
    deleting: bool = False  # a delete was accepted and is under way
    preempted: bool = False  # what the metadata server says at instance/preempted

    @property
    def name(self) -> str:
        return self.body["name"]

    @property
    def instance_id(self) -> str:
        return str(self.body.get("id", ""))

    @property
    def service_account(self) -> str:
        """The email of its service account; "" when it was created without one (no token on its metadata server)."""
        return (self.body.get("serviceAccounts") or [{}])[0].get("email", "")

    @property
    def scopes(self) -> tuple[str, ...]:
        """The access scopes of that account, as the insert listed them."""
        return tuple((self.body.get("serviceAccounts") or [{}])[0].get("scopes") or ())

    def metadata(self) -> dict[str, str]:
        return {i["key"]: i.get("value", "") for i in self.body.get("metadata", {}).get("items", [])}
