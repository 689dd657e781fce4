"""What stands behind a job: tasks run as containers of the boot image (the real agent,
started by the job's script runnable), at most `parallelism` at once, retried or failed
by the task's lifecycle policies, ended by its max run duration, by Spot preemption or by
the job's deletion, as the real service does."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import threading
import time
from typing import Any

from mlbatch.core import labels
from tests.support.fake_batch.jobs import enum
from tests.support.fake_batch.state import (
    CONTAINER_LABEL,
    MAX_RUN_DURATION_EXIT_CODE,
    PREEMPTED_EXIT_CODE,
    TERMINAL_TASK,
    FakeJob,
    FakeTask,
)

_ACTIONS = ("ACTION_UNSPECIFIED", "RETRY_TASK", "FAIL_TASK")
_MODELS = ("PROVISIONING_MODEL_UNSPECIFIED", "STANDARD", "SPOT", "PREEMPTIBLE", "RESERVATION_BOUND", "FLEX_START")
_vm_ids = itertools.count(1)


def _seconds(duration: str) -> float | None:
    return float(duration[:-1]) if duration else None


class BackingMixin:
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
                code = self._run_attempt(job, task, attempt)
                with self._lock:
                    if job.deleting:
                        return
                    if code == 0:
                        task.event(f"Task state is updated from RUNNING to SUCCEEDED on {task.vm}", "SUCCEEDED", 0)
                        return
                    action = self._action(spec, code)
                    if action == "FAIL_TASK" or attempt == retries:
                        why = "a lifecycle policy failed it" if action == "FAIL_TASK" else f"{retries} retries used"
                        task.event(f"Task failed with exit code {code} ({why})", "FAILED", code)
                        return
                    task.event(f"Task execution failed with exit code {code}; retrying (attempt {attempt + 1})", "PENDING", code)
        finally:
            slots.release()

    @staticmethod
    def _action(spec: dict[str, Any], code: int) -> str:
        for policy in spec.get("lifecyclePolicies", []):
            codes = policy.get("actionCondition", {}).get("exitCodes", [])
            if code in codes:
                return enum(policy.get("action"), _ACTIONS)
        return "RETRY_TASK"  # no policy: any failure is retried while retries are left

    def _env(self, job: FakeJob, task: FakeTask, attempt: int, workdir: str) -> dict[str, str]:
        spec, group = job.group.get("taskSpec", {}), job.group
        env: dict[str, str] = {}
        env.update(spec.get("environment", {}).get("variables", {}))
        env.update(spec.get("runnables", [{}])[0].get("environment", {}).get("variables", {}))
        if group.get("taskEnvironments"):
            env.update(group["taskEnvironments"][task.index].get("variables", {}))
        env.update(
            BATCH_TASK_INDEX=str(task.index),
            BATCH_TASK_COUNT=str(len(job.tasks)),
            BATCH_TASK_RETRY_ATTEMPT=str(attempt),
            MLBATCH_WORKDIR=workdir,  # the VM's disk: a host path mounted at the same path (the engine is the host's)
        )
        if self.storage_emulator:
            env["STORAGE_EMULATOR_HOST"] = self.storage_emulator
        return env

    def _run_attempt(self, job: FakeJob, task: FakeTask, attempt: int) -> int:
        """One execution on a fresh "VM": its exit code, as Batch reports it."""
        assert job.workdir is not None
        vm = f"fakebatch-{next(_vm_ids)}-{task.index}"
        workdir = job.workdir / vm
        workdir.mkdir(parents=True)
        with self._lock:
            if job.deleting:
                return -1
            task.vm = vm
            task.event(f"Task state is updated from {task.state} to ASSIGNED on {vm}", "ASSIGNED")
        argv = ["docker", "run", "-d", "--network", "host", "--name", vm, "--hostname", vm]
        argv += ["--label", f"managed-by={CONTAINER_LABEL}", "-v", f"{self.docker_socket}:/var/run/docker.sock"]
        argv += ["-v", f"{workdir}:{workdir}", "--entrypoint", "/bin/sh"]
        for key, value in self._env(job, task, attempt, str(workdir)).items():
            argv += ["-e", f"{key}={value}"]
        script = job.group["taskSpec"]["runnables"][0]["script"]["text"]
        result = subprocess.run([*argv, self.images[self._boot_image(job.body)], "-c", script], capture_output=True, text=True)
        if result.returncode != 0:
            return 50002  # Batch: the VM could not run the task
        with self._lock:
            task.container = result.stdout.strip()
            job.set_state("RUNNING")
            task.event(f"Task state is updated from ASSIGNED to RUNNING on {vm}", "RUNNING")
        spot = enum(self._instance_policy(job).get("provisioningModel"), _MODELS) == "SPOT"
        preempt_at = self.faults.preempt_tasks.get(task.index) if attempt == 0 and spot else None
        max_run = _seconds(job.group["taskSpec"].get("maxRunDuration", ""))
        started = time.monotonic()
        waiter = subprocess.Popen(["docker", "wait", task.container], stdout=subprocess.PIPE, text=True)
        code = None
        while code is None:
            try:
                out, _ = waiter.communicate(timeout=0.2)
                code = int(out.strip() or -1)
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                if job.deleting:
                    code = -1
                elif preempt_at is not None and elapsed >= preempt_at:
                    subprocess.run(["docker", "stop", "-t", "30", task.container], capture_output=True)  # ACPI shutdown
                    code = PREEMPTED_EXIT_CODE
                elif max_run is not None and elapsed >= max_run:
                    code = MAX_RUN_DURATION_EXIT_CODE
        waiter.kill()
        self._destroy_vm(vm, task.container)
        shutil.rmtree(workdir, ignore_errors=True)
        return code

    def _instance_policy(self, job: FakeJob) -> dict[str, Any]:
        return (job.body.get("allocationPolicy", {}).get("instances") or [{}])[0].get("policy", {})

    def _destroy_vm(self, vm: str, container: str) -> None:
        """The VM goes: its container, then the job containers its agent started on it (in that
        order: an agent still running could otherwise create a job container after the listing)."""
        if container:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        jobs = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={labels.INSTANCE}={vm}"], capture_output=True, text=True
        ).stdout.split()
        if jobs:
            subprocess.run(["docker", "rm", "-f", *jobs], capture_output=True)

    def delete_job(self, job: FakeJob) -> None:
        """DELETION_IN_PROGRESS, its VMs stopped, then the job is gone (from anyone: the test, another operator)."""
        with self._lock:
            if job.deleting:
                return
            job.deleting = True
            job.set_state("DELETION_IN_PROGRESS")

        def finish():
            for task in job.tasks:
                if task.state not in TERMINAL_TASK and task.vm:
                    self._destroy_vm(task.vm, task.container)
            time.sleep(0.5)  # the real deletion takes a while: the job is still listed, DELETION_IN_PROGRESS
            with self._lock:
                self.jobs.pop(job.name, None)
            if job.workdir:
                shutil.rmtree(job.workdir, ignore_errors=True)

        threading.Thread(target=finish, daemon=True).start()
