"""A deterministic bundle of batch_code/: the same files always give the same sha256."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

_SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def _files(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        out.extend(Path(dirpath, f) for f in files if not f.endswith(_SKIP_SUFFIXES))
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def make_bundle(root: Path) -> bytes:
    """tar.gz of `root`: sorted names, mtime 0, uid/gid 0, modes 644/755, no gzip name or time."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _files(root):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.size = len(data)
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract_bundle(data: bytes, target: Path) -> None:
    """Unpack a bundle; refuses members that would land outside `target`."""
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        # Bundles hold regular files only; checked by hand because the instance's Python
        # (Debian 12: 3.11.2) predates tarfile's extraction filters.
        for member in tar.getmembers():
            dest = (root / member.name).resolve()
            if not member.isfile() or not dest.is_relative_to(root):
                raise ValueError(f"refusing bundle member {member.name!r}: not a regular file inside the bundle")
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            dest.write_bytes(source.read())
            dest.chmod(member.mode & 0o755)
