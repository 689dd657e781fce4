"""The invoke root collection: one module per namespace beside this one, as pyinvoke's
`invocations` is laid out. Each task parses its options and calls the mlbatch package;
errors leave as `Exit` with their reserved code (README, "Exit codes").

invoke --list            all tasks;  invoke --help TASK  its options
"""

from invoke import Collection

from tasks import bench, dashboard, deps, dev, doctor, iam, images, jobs, local, releases, rundeck, runs, schedule

ns = Collection(
    releases.release,
    runs.run_batch,
    runs.logs,
    runs.gc,
    dashboard.dashboard,
    doctor.doctor,
    dev.demo,
    dev.lint,
    dev.test_ns,
    dev.check,
    runs.ns,
    local.ns,
    releases.ns,
    images.ns,
    jobs.ns,
    deps.ns,
    bench.ns,
    rundeck.ns,
    schedule.ns,
    iam.ns,
)
