"""Compute Engine machine types: their shape (vCPUs, memory) and the limits a job's container
gets on one (docs/architecture.md, "Runs": limits).

One table for both readers: the cost estimate (`mlbatch.run.prices`, vCPU-hours and GB-hours)
and the job container's memory and pids limits, which the controller writes into the run's
spec and the agent hands to the engine. Shapes from https://cloud.google.com/compute/docs/
general-purpose-machines and memory-optimized-machines: `<family>-<kind>-<vCPUs>` with a
fixed memory per vCPU for each kind, shared-core types of their own, and custom types
`[<family>-]custom-<vCPUs>-<MB>`.
"""

from __future__ import annotations

import dataclasses
import re

# Shared-core types: a fraction of a vCPU (what they bill), and their memory in GB.
SHARED_CORE = {
    "e2-micro": (0.25, 1.0),
    "e2-small": (0.5, 2.0),
    "e2-medium": (1.0, 4.0),
}
# GB of memory per vCPU of a kind, for every family; n1's differ.
MEMORY_PER_VCPU = {
    "standard": 4.0,
    "highmem": 8.0,
    "highcpu": 1.0,
    "n1-standard": 3.75,
    "n1-highmem": 6.5,
    "n1-highcpu": 0.9,
}
_PREDEFINED = re.compile(r"^(?P<family>[a-z][a-z0-9]*)-(?P<kind>[a-z]+)-(?P<vcpus>\d+)$")
_CUSTOM = re.compile(r"^(?:[a-z][a-z0-9]*-)?custom-(?P<vcpus>\d+)-(?P<mb>\d+)(?:-ext)?$")

# What the job's container may not take of its VM: the OS, the engine and the agent (which
# must outlive an out-of-memory job to record it). At least 512 MB, or a tenth of the memory.
HEADROOM_MIN_MB = 512
HEADROOM_SHARE = 0.10
MIN_MEMORY_MB = 64  # below this a Python job cannot start; the engine's own floor is 6 MB
PIDS_PER_VCPU = 1024  # processes and threads of the job, per vCPU (at least one vCPU's worth)
MAX_PIDS = 4_194_304  # the kernel's pid_max ceiling
PIDS_WITHOUT_SHAPE = 4096  # a machine type this table does not know


@dataclasses.dataclass(frozen=True)
class Shape:
    vcpus: float
    memory_gb: float

    @property
    def memory_mb(self) -> int:
        return int(self.memory_gb * 1024)


def shape(machine_type: str) -> Shape | None:
    """The machine type's vCPUs and memory, or None when this table does not know it."""
    if machine_type in SHARED_CORE:
        return Shape(*SHARED_CORE[machine_type])
    if custom := _CUSTOM.match(machine_type):
        return Shape(float(custom["vcpus"]), int(custom["mb"]) / 1024)
    found = _PREDEFINED.match(machine_type)
    if not found:
        return None
    per_vcpu = MEMORY_PER_VCPU.get(f"{found['family']}-{found['kind']}", MEMORY_PER_VCPU.get(found["kind"]))
    return Shape(float(found["vcpus"]), float(found["vcpus"]) * per_vcpu) if per_vcpu is not None else None


def headroom_mb(memory_mb: int) -> int:
    return max(HEADROOM_MIN_MB, int(memory_mb * HEADROOM_SHARE))


def max_job_memory_mb(machine_type: str) -> int | None:
    """The most memory a job's container may have on this machine type (None: unknown type)."""
    found = shape(machine_type)
    if found is None:
        return None
    return max(found.memory_mb - headroom_mb(found.memory_mb), MIN_MEMORY_MB)


@dataclasses.dataclass(frozen=True)
class Limits:
    """The job container's limits; 0 is none."""

    memory_mb: int
    pids: int


def job_limits(machine_type: str, memory_mb: int = 0, pids: int = 0) -> Limits:
    """The job's own `memory_mb`/`pids` (jobs.yaml), else what its machine type leaves after
    the headroom; no memory limit on a type this table does not know."""
    found = shape(machine_type)
    memory = memory_mb or (max_job_memory_mb(machine_type) or 0)
    derived_pids = min(MAX_PIDS, int(max(found.vcpus, 1.0) * PIDS_PER_VCPU)) if found else PIDS_WITHOUT_SHAPE
    return Limits(memory_mb=memory, pids=pids or derived_pids)
