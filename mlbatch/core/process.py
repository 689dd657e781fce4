"""What a command does as its process starts and as it ends."""

from __future__ import annotations

import gc

# Allocations between two young collections once started (CPython's default: 700).
STARTED_THRESHOLD = 20_000


def starting() -> None:
    """The process's command starts now, its modules still loading (run-batch: the task's
    ~300 after invoke's ~300). What is loaded so far lives as long as the process: it is frozen
    (gc.freeze), so no collection scans it again; and young collections come every 20,000
    allocations rather than 700, so the modules still to load are not scanned ~70 times while
    they load. ~25 ms of a run-batch's ~0.4 s of CPU (docs/architecture.md, "Launch overhead").
    Cycles are still collected, later: memory stays bounded (a long sweep's controller too).
    Only where the process starts: tests calling `main()` in-process do not."""
    gc.freeze()
    gc.set_threshold(STARTED_THRESHOLD, *gc.get_threshold()[1:])


def exiting() -> None:
    """The process ends now: its objects are frozen (gc.freeze), so the collection at interpreter
    exit skips them: ~50 ms for the ~600 modules run-batch loads, ~20 ms for the agent's ~300, and
    the OS frees the memory anyway. atexit handlers and finalizers still run. Only where the
    process ends: frozen objects are never collected."""
    gc.freeze()
