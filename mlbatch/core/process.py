"""What a command does as its process ends."""

from __future__ import annotations

import gc


def exiting() -> None:
    """The process ends now: its objects are frozen (gc.freeze), so the collection at interpreter
    exit skips them: ~50 ms for the ~600 modules run-batch loads, ~20 ms for the agent's ~300, and
    the OS frees the memory anyway. atexit handlers and finalizers still run. Only where the
    process ends: frozen objects are never collected."""
    gc.freeze()
