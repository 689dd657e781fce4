"""Where a sweep's tasks run, by profile: local instances, or one Cloud Batch job (imported lazily)."""

from __future__ import annotations

import functools
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
    from mlbatch.run.sweep_batch import BATCH_PERMISSIONS, BATCH_ROLE, BatchTasks

    jobs = BatchJobs(settings)
    # Batch VMs are a run's VMs in another wrapper: the same subnet and runner account (actAs);
    # the caller needs Batch's permissions instead of Compute's.
    preflight = functools.partial(GceProvider(settings).preflight, BATCH_PERMISSIONS, BATCH_ROLE)
    return BatchTasks(bucket, jobs, say, preflight), jobs
