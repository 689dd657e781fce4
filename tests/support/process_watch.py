"""Every process on the machine, sampled while a block runs: what `ps` would have shown.

A process's command line (/proc/PID/cmdline) is readable by every user of the machine, and a
CI runner's neighbours see it; its environment (/proc/PID/environ) by its own user and root.
`ProcessWatch` reads both for every process every `interval` seconds on a thread of its own
and keeps each distinct one, so that a test can ask afterwards whether a secret (one known
only once the block is over, too: a token a VM was given) ever showed in either. The fake
VMs are containers on this machine, so their processes (Ansible's modules, `docker login`)
are sampled as well. `exempt`: the processes of the stand-ins for Google's side (the
intercepting proxy), which know the tokens as Google does. A process that lives less than
`interval` can be missed: the watch samples, it does not trace.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable


class ProcessWatch:
    def __init__(self, exempt: Iterable[int] = (), interval: float = 0.05):
        self.exempt = {str(pid) for pid in exempt}
        self.interval = interval
        self.cmdlines: set[bytes] = set()
        self.environs: set[bytes] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-watch", daemon=True)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                self.sample()  # once more as the block ends
                return

    def sample(self) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid in self.exempt:
                continue
            for name, seen in (("cmdline", self.cmdlines), ("environ", self.environs)):
                try:
                    with open(f"/proc/{pid}/{name}", "rb") as f:
                        seen.add(f.read())
                except OSError:  # gone meanwhile, or not ours to read
                    continue
        self.samples += 1

    def showing(self, secrets: Iterable[str]) -> list[str]:
        """Each command line or environment that held one of `secrets`, shortened around it."""
        found = []
        for secret in filter(None, secrets):
            needle = secret.encode()
            for kind, texts in (("cmdline", self.cmdlines), ("environ", self.environs)):
                for text in texts:
                    at = text.find(needle)
                    if at >= 0:
                        excerpt = text[max(0, at - 120) : at + len(needle) + 20].replace(b"\0", b" ")
                        found.append(f"{kind}: ...{excerpt.decode(errors='replace')}...")
        return found
