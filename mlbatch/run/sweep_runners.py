"""Where a sweep's tasks run, by profile: local instances, or one Cloud Batch job (imported lazily)."""

from __future__ import annotations

from typing import Any

from mlbatch.core.bucket import Bucket
from mlbatch.core.settings import Settings
from mlbatch.run.sweep import TaskRunner
from mlbatch.ui import Say


def task_runner(settings: Settings, bucket: Bucket, say: Say) -> tuple[TaskRunner, Any]:
    """The runner, and the API client it calls (the local provider, or the Cloud Batch client)."""
    if settings.is_local:
        from mlbatch.providers import get_provider
        from mlbatch.run.sweep_local import LocalTasks

        provider = get_provider(settings)
        return LocalTasks(bucket, provider, say), provider
    from mlbatch.providers.batch import BatchJobs
    from mlbatch.providers.gce import GceProvider
    from mlbatch.run.sweep_batch import BatchTasks

    jobs = BatchJobs(settings)
    # Batch VMs are the run's VMs in another wrapper: the same subnet, runner account and actAs.
    return BatchTasks(bucket, jobs, say, GceProvider(settings).preflight), jobs
