"""Ways in for schedulers: Rundeck job definitions, Cloud Scheduler -> Pub/Sub -> Cloud
Function, and the catalog they are built from. They all end in `run-batch` (attached) or a
detached run; the run's records in the bucket stay the one source of truth."""
