"""A deterministic bundle of batch_code/: the same files always give the same sha256.

What goes in: regular files inside the folder, and nothing else.
- In a git checkout, only the files git tracks: a stray `.env`, a notebook's output or a
  key file dropped next to the code never ships. Modified tracked files are bundled as
  they are on disk, and the bundle records why its tree was not clean.
- A symlink whose target is a regular file inside the folder is stored as the file it
  names (a bundle holds regular files only, so extraction never creates a link). A link
  that leaves the folder, dangles or names a directory, and any special file, refuses
  the release (BadInput, exit 100) naming the path: following it would publish whatever
  it points to (on a CI runner, a mounted secret).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

from mlbatch.core.errors import BadInput
from mlbatch.core.scrub import scrub

_SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclasses.dataclass(frozen=True)
class Collected:
    """The files a bundle holds (name in the bundle -> file read) and the state of their tree."""

    files: dict[str, Path]
    clean: bool
    tree_state: str  # why the tree is not clean, or what it is


@dataclasses.dataclass(frozen=True)
class Bundle:
    data: bytes
    sha256: str
    clean: bool
    tree_state: str


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)


def _in_git_checkout(root: Path) -> bool:
    return shutil.which("git") is not None and _git(root, "rev-parse", "--is-inside-work-tree").stdout.strip() == b"true"


def _git_files(root: Path) -> tuple[list[str], bool, str]:
    listed = _git(root, "ls-files", "-z", "--cached", "--", ".")
    if listed.returncode != 0:
        said = scrub(listed.stderr.decode(errors="replace").strip())  # git names remotes, credentials and all
        raise BadInput(f"cannot list the files git tracks in {root}: {said}")
    names = [n for n in listed.stdout.decode().split("\0") if n]
    status = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", ".").stdout.decode().split("\0")
    untracked = [entry[3:] for entry in status if entry.startswith("??")]
    changed = [entry[3:] for entry in status if entry and not entry.startswith("??")]
    reasons = []
    if changed:
        reasons.append(f"{len(changed)} tracked file(s) differ from the commit ({', '.join(sorted(changed)[:5])})")
    if untracked:
        reasons.append(f"{len(untracked)} untracked file(s) not bundled ({', '.join(sorted(untracked)[:5])})")
    state = "; ".join(reasons) or "clean git tree: exactly the committed files"
    return names, not reasons, state


def _walked_files(root: Path) -> list[str]:
    out: list[str] = []
    for dirpath, dirs, files in os.walk(root):  # does not descend into linked directories
        links = [d for d in dirs if Path(dirpath, d).is_symlink()]
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and d not in links)
        out.extend(Path(dirpath, name).relative_to(root).as_posix() for name in files + links)
    return [n for n in out if not n.endswith(_SKIP_SUFFIXES)]


def _checked(root: Path, name: str) -> Path | None:
    """The regular file inside `root` that `name` stands for; None when it is gone (deleted, not committed)."""
    path = root / name
    real_root = root.resolve()
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None
    where = f"{root.name}/{name}"
    if stat.S_ISLNK(mode):
        target = os.readlink(path)
        resolved = path.resolve()
        if not resolved.is_relative_to(real_root):
            raise BadInput(
                f"refusing to bundle {where}: a symlink to {target!r}, outside {root.name}/ (expected files inside it)"
            )
        if not resolved.is_file():
            raise BadInput(f"refusing to bundle {where}: a symlink to {target!r}, which is not a regular file")
        return resolved
    if not stat.S_ISREG(mode):
        raise BadInput(f"refusing to bundle {where}: not a regular file (mode {stat.filemode(mode)})")
    if not path.resolve().is_relative_to(real_root):  # a linked parent directory
        raise BadInput(f"refusing to bundle {where}: a parent directory is a symlink leading outside {root.name}/")
    return path


def collect(root: Path) -> Collected:
    """Which files the bundle of `root` holds; raises BadInput for a link or file that must not ship."""
    if not root.is_dir():
        raise BadInput(f"invalid code folder {root}: expected a directory")
    if _in_git_checkout(root):
        names, clean, state = _git_files(root)
    else:
        names, clean, state = _walked_files(root), False, "not a git checkout: every regular file bundled"
    files = {}
    for name in sorted(names):
        path = _checked(root, name)
        if path is not None:
            files[name] = path
    return Collected(files, clean, state)


def build_bundle(root: Path) -> Bundle:
    """tar.gz of `root`: sorted names, mtime 0, uid/gid 0, modes 644/755, no gzip name or time."""
    collected = collect(root)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in collected.files.items():
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())
    data = out.getvalue()
    return Bundle(data, sha256(data), collected.clean, collected.tree_state)


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
