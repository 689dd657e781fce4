"""What stands behind a job: its tasks, at most `parallelism` at once, each attempt on a VM of its
own (vms.py) that Batch's agent reports on, retried or failed by the task's lifecycle policy,
ended by its max run duration, by Spot preemption or by the job's deletion, as the real
service does."""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

from tests.support.fake_batch.jobs import enum
from tests.support.fake_batch.state import (
    MAX_RUN_DURATION_EXIT_CODE,
    PREEMPTED_EXIT_CODE,
    REPORTING_TIMEOUT_EXIT_CODE,
    TERMINAL_TASK,
    FakeJob,
    FakeTask,
    TaskVm,
)
from tests.support.fake_batch.vms import KILLED

_ACTIONS = ("ACTION_UNSPECIFIED", "RETRY_TASK", "FAIL_TASK")
_MODELS = ("PROVISIONING_MODEL_UNSPECIFIED", "STANDARD", "SPOT", "PREEMPTIBLE", "RESERVATION_BOUND", "FLEX_START")
# The permission Batch's agent on a job VM reports with (projects.locations.state.report), as
# the VM's service account: roles/batch.agentReporter (https://cloud.google.com/iam/docs/roles-permissions/batch;
# https://cloud.google.com/batch/docs/create-run-job-custom-service-account asks for the
# account's Batch permissions before a job uses it).
REPORT_PERMISSION = "batch.states.report"


def _seconds(duration: str) -> float | None:
    return float(duration[:-1]) if duration else None


def action(spec: dict[str, Any], code: int) -> str:
    """What the task's lifecycle policy does with a failed execution's exit code (LifecyclePolicy,
    batch.v1): RETRY_TASK retries on a listed code and fails on any other; FAIL_TASK the reverse;
    no policy, the default: retry while retries are left."""
    policies = spec.get("lifecyclePolicies") or []
    if not policies:
        return "RETRY_TASK"
    policy = policies[0]  # the API takes one (jobs.py refuses more)
    listed = code in policy.get("actionCondition", {}).get("exitCodes", [])
    kind = enum(policy.get("action"), _ACTIONS)
    if kind == "RETRY_TASK":
        return "RETRY_TASK" if listed else "FAIL_TASK"
    if kind == "FAIL_TASK":
        return "FAIL_TASK" if listed else "RETRY_TASK"
    return "RETRY_TASK"


class BackingMixin:
    report_window = 60.0  # seconds Batch waits for a new VM's agent to report before it gives the VM up

    def _schedule(self, job: FakeJob) -> None:
        """Dispatch the job's tasks in index order, `parallelism` at a time, until all end or the job goes."""
        time.sleep(0.2)  # the real service takes seconds to queue, allocate and boot
        with self._lock:
            if job.deleting:
                return
            job.workdir = self._workroot / job.uid
            job.workdir.mkdir(parents=True, exist_ok=True)
            job.set_state("SCHEDULED")
            if self.faults.quota_exceeded:  # like the real service: the job waits, its events say why
                job.events.append(
                    {
                        "type": "STATUS_CHANGED",
                        "description": "VM in Managed Instance Group meets error: Batch Error: code - CODE_GCE_QUOTA_EXCEEDED, "
                        "description - error count is 1, latest message example: Instance creation failed: "
                        "Quota 'CPUS' exceeded.  Limit: 8.0 in region europe-west4.",
                    }
                )
                return
        slots = threading.Semaphore(int(job.group.get("parallelism") or len(job.tasks)))
        workers = []
        for task in job.tasks:
            slots.acquire()
            if job.deleting:
                slots.release()
                break
            worker = threading.Thread(target=self._run_task, args=(job, task, slots), daemon=True)
            worker.start()
            workers.append(worker)
        for worker in workers:
            worker.join()
        with self._lock:
            if not job.deleting:
                failed = any(t.state == "FAILED" for t in job.tasks)
                job.set_state("FAILED" if failed else "SUCCEEDED")

    def _run_task(self, job: FakeJob, task: FakeTask, slots: threading.Semaphore) -> None:
        spec = job.group.get("taskSpec", {})
        retries = int(spec.get("maxRetryCount", 0))
        try:
            for attempt in range(retries + 1):
                code, why = self._run_attempt(job, task, attempt)
                with self._lock:
                    if job.deleting:
                        return
                    if code == 0:
                        task.event(f"Task state is updated from RUNNING to SUCCEEDED on {task.vm}", "SUCCEEDED", 0)
                        return
                    decided = action(spec, code)
                    if decided == "FAIL_TASK" or attempt == retries:
                        policy = "the lifecycle policy failed it" if decided == "FAIL_TASK" else f"{retries} retries used"
                        task.event(f"Task failed with exit code {code}{why} ({policy})", "FAILED", code)
                        return
                    retrying = f"; retrying (attempt {attempt + 1})"
                    task.event(f"Task execution failed with exit code {code}{why}{retrying}", "PENDING", code)
        finally:
            slots.release()

    def _env(self, job: FakeJob, task: FakeTask, attempt: int) -> dict[str, str]:
        spec, group = job.group.get("taskSpec", {}), job.group
        env: dict[str, str] = {}
        env.update(spec.get("environment", {}).get("variables", {}))
        env.update(spec.get("runnables", [{}])[0].get("environment", {}).get("variables", {}))
        if group.get("taskEnvironments"):
            env.update(group["taskEnvironments"][task.index].get("variables", {}))
        env.update(BATCH_TASK_INDEX=str(task.index), BATCH_TASK_COUNT=str(len(job.tasks)), BATCH_TASK_RETRY_ATTEMPT=str(attempt))
        if self.storage_emulator:  # what a VM's network reaches as Cloud Storage
            env["STORAGE_EMULATOR_HOST"] = self.storage_emulator
        return env

    def _run_attempt(self, job: FakeJob, task: FakeTask, attempt: int) -> tuple[int, str]:
        """One execution on a fresh VM: its exit code as Batch reports it, and why (for the event)."""
        assert job.workdir is not None
        vm = self._new_vm(job, task)
        try:
            with self._lock:
                if job.deleting:
                    return -1, ""
                task.vm = vm.name
                task.event(f"Task state is updated from {task.state} to ASSIGNED on {vm.name}", "ASSIGNED")
            env = self._env(job, task, attempt)
            if not self._boot_vm(job, vm, env):
                return REPORTING_TIMEOUT_EXIT_CODE, f": VM {vm.name} did not boot"
            if not self.iam.holds(f"serviceAccount:{vm.service_account}", REPORT_PERMISSION):
                # Batch's agent on the VM is refused (403) each time it reports: no task runs there,
                # and the service gives the VM up once it has heard nothing for its window.
                if self._wait_while_up(job, vm, self.report_window):
                    return -1, ""
                return REPORTING_TIMEOUT_EXIT_CODE, (
                    f": no report from the Batch agent on VM {vm.name} within {self.report_window:.0f}s "
                    f"(its service account {vm.service_account} lacks {REPORT_PERMISSION})"
                )
            log = job.workdir / f"{vm.name}.log"
            runnable = self._start_runnable(job, vm, env, log)
            with self._lock:
                job.set_state("RUNNING")
                task.event(f"Task state is updated from ASSIGNED to RUNNING on {vm.name}", "RUNNING")
            code, why = self._watch(job, task, attempt, vm, runnable)
            task.outputs.append(log.read_text(errors="replace"))
            return code, why
        finally:
            self._destroy_vm(job, vm)

    def _wait_while_up(self, job: FakeJob, vm: TaskVm, seconds: float) -> bool:
        """Wait `seconds`; True when the job is being deleted first."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if job.deleting:
                return True
            time.sleep(0.2)
        return False

    def _watch(self, job: FakeJob, task: FakeTask, attempt: int, vm: TaskVm, runnable) -> tuple[int, str]:
        spot = enum(self._instance_policy(job).get("provisioningModel"), _MODELS) == "SPOT"
        preempt_at = self.faults.preempt_tasks.get(task.index) if attempt == 0 and spot else None
        max_run = _seconds(job.group["taskSpec"].get("maxRunDuration", ""))
        started = time.monotonic()
        ending: threading.Thread | None = None
        why = ""
        while runnable.poll() is None:
            elapsed = time.monotonic() - started
            if job.deleting:
                runnable.kill()
                return -1, ""
            if ending is None and preempt_at is not None and elapsed >= preempt_at:
                vm.preempted = True  # instance/preempted turns TRUE, then the ACPI shutdown
                why = f": VM {vm.name} was preempted"
                ending = threading.Thread(target=self._shut_down_vm, args=(vm,), daemon=True)
                ending.start()
            elif ending is None and max_run is not None and elapsed >= max_run:
                runnable.kill()
                return MAX_RUN_DURATION_EXIT_CODE, f": the task ran longer than its max run duration {max_run:.0f}s"
            time.sleep(0.2)
        code = runnable.returncode
        if vm.preempted:
            # Within the shutdown window the runnable's own exit code is what is reported; killed with the VM, Batch's.
            code = PREEMPTED_EXIT_CODE if code == KILLED else code
        elif vm.guest and not self._vm_running(vm):
            # The VM went from inside (powered off, deleted itself): Batch's agent on it stopped reporting.
            code, why = REPORTING_TIMEOUT_EXIT_CODE, f": VM {vm.name} stopped (it was shut down from inside)"
        if ending is not None:
            ending.join()
        return code, why

    def _instance_policy(self, job: FakeJob) -> dict[str, Any]:
        return (job.body.get("allocationPolicy", {}).get("instances") or [{}])[0].get("policy", {})

    def delete_job(self, job: FakeJob) -> None:
        """DELETION_IN_PROGRESS, its VMs stopped, then the job is gone (from anyone: the test, another operator)."""
        with self._lock:
            if job.deleting:
                return
            job.deleting = True
            job.set_state("DELETION_IN_PROGRESS")

        def finish():
            for task in job.tasks:
                vm = self.vms.get(task.vm)
                if task.state not in TERMINAL_TASK and vm is not None:
                    self._destroy_vm(job, vm)
            time.sleep(0.5)  # the real deletion takes a while: the job is still listed, DELETION_IN_PROGRESS
            with self._lock:
                self.jobs.pop(job.name, None)
            if job.workdir:
                shutil.rmtree(job.workdir, ignore_errors=True)

        threading.Thread(target=finish, daemon=True).start()
