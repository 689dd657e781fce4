"""Errors that carry the exit code a scheduler branches on (see README, "Exit codes")."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Reserved exit codes of mlbatch commands; the job's own codes pass through as-is.

    They sit high (above the codes jobs commonly use, below 126 where shells start
    reserving) so a scheduler can tell "the job failed" from "mlbatch could not run it".
    """

    OK = 0
    BAD_INPUT = 100  # invalid version, job, params or settings; nothing was started
    NOT_FOUND = 101  # release or run does not exist
    ALREADY_EXISTS = 102  # immutable thing exists (a second release of a version)
    STEP_FAILED = 103  # a release step failed (message names the step)
    FETCH_FAILED = 104  # instance could not pull the container or fetch/verify the code
    PREEMPTED = 105  # preempted more often than the job's retries allow
    NO_CAPACITY = 106  # no zone had capacity
    QUOTA_EXCEEDED = 107
    TIMEOUT = 108  # the job outlived its timeout and was stopped
    CANCELLED = 109  # the controller got SIGINT/SIGTERM; instance removed
    INFRA_FAILED = 110  # provider error that is neither the job's nor the above
    PERMISSION_DENIED = 111
    TASKS_FAILED = 112  # a sweep ran and some of its tasks did not succeed (sweep.json says which)
    SKIPPED_OVERLAP = 113  # concurrency: skip, and a run of the job is still going; nothing was started


# One line per reserved code, for exports that carry the table (Rundeck job descriptions).
MEANINGS = {
    ExitCode.OK: "the job succeeded",
    ExitCode.BAD_INPUT: "bad input: version, job, param, option or setting; nothing was started",
    ExitCode.NOT_FOUND: "not found: the release or run does not exist",
    ExitCode.ALREADY_EXISTS: "already exists: a release of this version exists",
    ExitCode.STEP_FAILED: "a release step failed",
    ExitCode.FETCH_FAILED: "the instance could not pull the container or fetch/verify the code",
    ExitCode.PREEMPTED: "preempted more often than the job's max_preemption_retries allow",
    ExitCode.NO_CAPACITY: "no capacity in any configured zone",
    ExitCode.QUOTA_EXCEEDED: "quota exceeded",
    ExitCode.TIMEOUT: "the job outlived its timeout and was stopped",
    ExitCode.CANCELLED: "cancelled; the instance was deleted",
    ExitCode.INFRA_FAILED: "infrastructure error that is neither the job's nor one of the above",
    ExitCode.PERMISSION_DENIED: "permission denied",
    ExitCode.TASKS_FAILED: "a sweep ran and some of its tasks did not succeed (sweep.json says which)",
    ExitCode.SKIPPED_OVERLAP: "skipped: a run of this job is still going and the job's concurrency is skip",
}


class MlbatchError(Exception):
    """An error with a message meant for a person and an exit code meant for a scheduler."""

    exit_code: ExitCode = ExitCode.INFRA_FAILED

    def __init__(self, message: str, exit_code: ExitCode | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


# The errors that carry a reserved code, here and nowhere else, in the order of the README's
# table; raised by core, release, providers, the controller and the agent alike. Not one
# class per code: four kinds of failure share 110 (InfraError, BadRecord, Conflict, NotStarted), and the
# codes a run ends with rather than raises (105 preempted, 108 timeout, 109 cancelled, 112
# tasks failed) come from its result record (runs.STATUS_EXIT_CODES), not from an exception.


class BadInput(MlbatchError):
    exit_code = ExitCode.BAD_INPUT


class NotFound(MlbatchError):
    exit_code = ExitCode.NOT_FOUND


class AlreadyExists(MlbatchError):
    exit_code = ExitCode.ALREADY_EXISTS


class StepFailed(MlbatchError):
    """A release step failed; the message names the step."""

    exit_code = ExitCode.STEP_FAILED


class FetchFailed(MlbatchError):
    """The instance could not pull the container or fetch and verify the code."""

    exit_code = ExitCode.FETCH_FAILED


class GpuUnavailable(FetchFailed):
    """A GPU job's instance cannot give its container the GPUs (no driver, a driver that did not
    load, an engine without NVIDIA's toolkit): like a container that cannot be pulled, 104."""


class CapacityError(MlbatchError):
    """No capacity in this zone: the controller tries the next one."""

    exit_code = ExitCode.NO_CAPACITY


class QuotaError(MlbatchError):
    exit_code = ExitCode.QUOTA_EXCEEDED


class InfraError(MlbatchError):
    """Infrastructure that is neither the job's nor one of the above (the engine, the registry)."""

    exit_code = ExitCode.INFRA_FAILED


class BadRecord(MlbatchError):
    """A record in the bucket that exists but cannot be read (corrupt, incomplete, or from a newer mlbatch)."""

    exit_code = ExitCode.INFRA_FAILED


class NotStarted(MlbatchError):
    """A keyed run's first instance could not be created for a reason that may pass: the run is
    not recorded as ended, and its idempotency key's next trigger resumes it (mlbatch/run/claims.py)."""

    exit_code = ExitCode.INFRA_FAILED


class PermissionDenied(MlbatchError):
    exit_code = ExitCode.PERMISSION_DENIED


class Conflict(MlbatchError):
    """A conditional write lost: the object's generation is no longer the one read."""

    exit_code = ExitCode.INFRA_FAILED


class OverlapSkipped(MlbatchError):
    """The job's concurrency is skip and a run of it is still going; nothing was started."""

    exit_code = ExitCode.SKIPPED_OVERLAP
