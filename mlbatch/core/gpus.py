"""Which GPUs a job may ask for, on which machine types, how many: checked in the catalog
before anything starts (docs/architecture.md, "GPU jobs").

From Google's "GPU machine types" (https://cloud.google.com/compute/docs/gpus, as of 2025-05):
the accelerator-optimized series come with their GPUs, a fixed number per machine type (G2:
NVIDIA L4; A2 Standard: A100 40GB; A2 Ultra: A100 80GB; A3: H100 80GB); the N1 general-purpose
series takes attached T4, V100, P100 or P4 GPUs in the counts listed there, each count with a
most vCPUs and memory the VM may have (N1 shared-core types take none).
"""

from __future__ import annotations

import dataclasses

from mlbatch.core import machines

# The accelerator-optimized machine types and the GPUs each comes with.
FIXED: dict[str, tuple[str, int]] = {
    **{f"g2-standard-{n}": ("nvidia-l4", c) for n, c in ((4, 1), (8, 1), (12, 1), (16, 1), (24, 2), (32, 1), (48, 4), (96, 8))},
    **{f"a2-highgpu-{n}g": ("nvidia-tesla-a100", n) for n in (1, 2, 4, 8)},
    "a2-megagpu-16g": ("nvidia-tesla-a100", 16),
    **{f"a2-ultragpu-{n}g": ("nvidia-a100-80gb", n) for n in (1, 2, 4, 8)},
    "a3-highgpu-8g": ("nvidia-h100-80gb", 8),
}
# N1's attachable GPUs: count -> (most vCPUs, most memory in GB) of the VM they attach to.
ATTACHED: dict[str, dict[int, tuple[int, float]]] = {
    "nvidia-tesla-t4": {1: (48, 312), 2: (48, 312), 4: (96, 624)},
    "nvidia-tesla-v100": {1: (12, 78), 2: (24, 156), 4: (48, 312), 8: (96, 624)},
    "nvidia-tesla-p100": {1: (16, 104), 2: (32, 208), 4: (64, 208)},
    "nvidia-tesla-p4": {1: (24, 156), 2: (48, 312), 4: (96, 624)},
}
TYPES = tuple(sorted({t for t, _ in FIXED.values()} | set(ATTACHED)))


def machine_family(machine_type: str) -> str:
    return machine_type.split("-", 1)[0]


def fixed_gpus(machine_type: str) -> tuple[str, int] | None:
    """The GPUs an accelerator-optimized machine type comes with, or None."""
    return FIXED.get(machine_type)


def _n1_shape(machine_type: str) -> tuple[int, float] | None:
    """(vCPUs, memory GB) of a predefined or custom N1 type (the one table of shapes,
    mlbatch.core.machines: n1-standard-8 is 8 vCPUs, 30 GB), or None."""
    found = machines.shape(machine_type) if machine_family(machine_type) == "n1" else None
    return (int(found.vcpus), found.memory_gb) if found else None


@dataclasses.dataclass(frozen=True)
class GpuProblem:
    """What is wrong with a job's GPU request, and the form expected."""

    value: str
    expected: str

    def __str__(self) -> str:
        return f"{self.value}: expected {self.expected}"


def check(machine_type: str, gpu_type: str, count: int) -> GpuProblem | None:
    """None when `machine_type` can run `count` GPUs of `gpu_type` (0: none), else what is wrong."""
    fixed = fixed_gpus(machine_type)
    if not gpu_type:
        if fixed:
            return GpuProblem(
                f"machine type {machine_type} without gpu",
                f"gpu: {{type: {fixed[0]}, count: {fixed[1]}}} ({machine_type} comes with {fixed[1]} {fixed[0]})",
            )
        return None
    asked = f"gpu {{type: {gpu_type}, count: {count}}} on {machine_type}"
    if gpu_type not in TYPES:
        return GpuProblem(f"gpu type {gpu_type!r}", f"one of {', '.join(TYPES)}")
    if gpu_type in ATTACHED:
        counts = ATTACHED[gpu_type]
        shape = _n1_shape(machine_type)
        if shape is None:
            return GpuProblem(asked, f"an N1 machine type for {gpu_type}, e.g. n1-standard-8 (it attaches to N1 only)")
        if count not in counts:
            return GpuProblem(asked, f"a count of {', '.join(map(str, counts))} for {gpu_type}")
        cpus, memory = shape
        most_cpus, most_memory = counts[count]
        if cpus > most_cpus or memory > most_memory:
            return GpuProblem(
                asked,
                f"at most {most_cpus} vCPUs and {most_memory:g} GB with {count} {gpu_type} "
                f"({machine_type} has {cpus} vCPUs and {memory:g} GB): a smaller N1 type, or more GPUs",
            )
        return None
    shapes = [m for m, (t, n) in FIXED.items() if t == gpu_type]
    if fixed is None or fixed[0] != gpu_type:
        return GpuProblem(asked, f"a machine type that comes with {gpu_type}: {', '.join(shapes)}")
    if fixed[1] != count:
        same = [m for m in shapes if FIXED[m][1] == count]
        other = f"; {count} come with {', '.join(same)}" if same else ""
        return GpuProblem(asked, f"count {fixed[1]}: {machine_type} comes with {fixed[1]} {gpu_type}{other}")
    return None
