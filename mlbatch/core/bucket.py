"""The bucket: a `file://` folder or a `gs://` bucket behind one small interface.

Immutable objects (manifests, code bundles, run specs) are created with "only if
absent" semantics: `if_generation_match=0` on GCS, an exclusive hard link on disk.

Every GCS call retries transient failures (429, 5xx, dropped connections) with the
preconditions that make the retry safe:
- "only if absent" writes carry `if_generation_match=0`; when a retry meets the object
  already there with exactly our bytes, it was our own earlier try whose answer was lost.
- overwrites (attempt records) write the same bytes again: idempotent.
- appends (logs) are a step that looks before it acts: the object's size says whether the
  chunk is already in; if not, a part object is composed onto it under
  `if_generation_match` of the generation just read, so a chunk goes in exactly once.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from mlbatch.core.errors import AlreadyExists, BadInput, Conflict, MlbatchError, NotFound


class Bucket(Protocol):
    uri: str

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes: ...
    def size(self, key: str) -> int: ...
    def append(self, key: str, data: bytes, *, at: int) -> None: ...
    def write(self, key: str, data: bytes, *, immutable: bool = False) -> None: ...
    def upload(self, key: str, path: Path, *, immutable: bool = False) -> None: ...
    def download(self, key: str, path: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def url(self, key: str) -> str: ...
    # Compare-and-swap on one object: generation 0 means "absent", as GCS's if_generation_match.
    def read_generation(self, key: str) -> tuple[bytes | None, int]: ...
    def write_if_generation(self, key: str, data: bytes, generation: int) -> None: ...


FILE_SCHEME = "file://"


def file_bucket_dir(uri: str) -> Path | None:
    """The folder of a file:// bucket; None for any other kind."""
    return Path(uri[len(FILE_SCHEME) :]) if uri.startswith(FILE_SCHEME) else None


def file_bucket_uri(folder: Path) -> str:
    return f"{FILE_SCHEME}{folder}"


def open_bucket(uri: str) -> Bucket:
    folder = file_bucket_dir(uri)
    if folder is not None:
        return FileBucket(folder)
    if uri.startswith("gs://"):
        return GcsBucket(uri)
    raise BadInput(f"invalid bucket {uri!r}: expected file:///path or gs://bucket[/prefix]")


def write_immutable(bucket: Bucket, key: str, data: bytes, retain_until: dt.datetime | None = None) -> None:
    """Write once ("only if absent"); with `retain_until`, also locked until then (gs:// only)."""
    if retain_until is None:
        bucket.write(key, data, immutable=True)
    elif isinstance(bucket, GcsBucket):
        bucket.write(key, data, immutable=True, retain_until=retain_until)
    else:
        raise BadInput(f"{bucket.uri}: object retention needs a gs:// bucket (set release_retention_days: 0)")


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise BadInput(f"invalid object key {key!r}")
    return key


class FileBucket:
    """A folder standing in for a bucket; writes are atomic (temp file + rename/link)."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = file_bucket_uri(root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def url(self, key: str) -> str:
        return f"{self.uri}/{key}"

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of the object (all of it by default)."""
        try:
            with self._path(key).open("rb") as fh:
                fh.seek(start)
                return fh.read() if end is None else fh.read(max(0, end - start))
        except FileNotFoundError:
            raise NotFound(f"{self.url(key)} does not exist") from None

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"{self.url(key)} does not exist") from None

    def append(self, key: str, data: bytes, *, at: int) -> None:
        """Add `data` at offset `at` (the size the caller already appended): a plain file append."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("ab") as fh:
            if fh.tell() != at:
                raise MlbatchError(f"{self.url(key)} holds {fh.tell()} bytes, the appender expected {at}")
            fh.write(data)

    def write(self, key: str, data: bytes, *, immutable: bool = False) -> None:
        self._store(key, lambda fh: fh.write(data), immutable)

    def _store(self, key: str, fill, immutable: bool) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fill(fh)
            os.chmod(tmp, 0o644)
            if immutable:
                try:
                    os.link(tmp, target)  # fails if target exists: the file:// if_generation_match=0
                except FileExistsError:
                    raise AlreadyExists(f"{self.url(key)} already exists and is immutable") from None
            else:
                os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def upload(self, key: str, path: Path, *, immutable: bool = False) -> None:
        """Copied in 1 MB blocks: results of several GB never sit in memory."""
        with Path(path).open("rb") as source:
            self._store(key, lambda fh: shutil.copyfileobj(source, fh, 1024 * 1024), immutable)

    def download(self, key: str, path: Path) -> None:
        Path(path).write_bytes(self.read(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    @contextlib.contextmanager
    def _locked(self, key: str):
        """Writers of one folder take turns (flock on the folder), across processes on this host."""
        folder = self._path(key).parent
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _generation(self, path: Path) -> int:
        # Every write replaces the file with a new one: a new inode and a new mtime together
        # stand for GCS's generation number.
        try:
            st = path.stat()
        except FileNotFoundError:
            return 0
        return st.st_mtime_ns * 10**10 + st.st_ino % 10**10

    def read_generation(self, key: str) -> tuple[bytes | None, int]:
        path = self._path(key)
        with self._locked(key):
            generation = self._generation(path)
            return (path.read_bytes() if generation else None), generation

    def write_if_generation(self, key: str, data: bytes, generation: int) -> None:
        with self._locked(key):
            if self._generation(self._path(key)) != generation:
                raise Conflict(f"{self.url(key)} changed since it was read (generation {generation})")
            self.write(key, data)

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in sorted(files):
                if not name.startswith(".tmp-"):
                    yield str(Path(dirpath, name).relative_to(self.root))


# Parts of a log object are composed onto it; GCS allows 1024 components in an object, so
# the object is rewritten as one piece (from its own bytes) before it gets there.
MAX_COMPONENTS = 1000
PART_MARK = ".mlbatch-part-"
UPLOAD_CHUNK = 8 * 1024 * 1024  # resumable uploads stream in 8 MB chunks (a multiple of 256 KiB)


def _part_key(key: str, at: int) -> str:
    return f"{key}{PART_MARK}{at:015d}"


def _retry():
    """google-cloud-storage's own policy (429, 5xx, connection errors), with a shorter first pause."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(initial=0.5, multiplier=2.0, maximum=30.0).with_timeout(300.0)


def _md5_b64(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()


class GcsBucket:
    """gs://bucket[/prefix] through google-cloud-storage (imported only when used)."""

    def __init__(self, uri: str):
        from google.cloud import storage  # type: ignore[attr-defined]

        name, _, prefix = uri[len("gs://") :].partition("/")
        self.uri = uri.rstrip("/")
        self.prefix = prefix.strip("/")
        if os.environ.get("STORAGE_EMULATOR_HOST"):  # an emulator (local and test profiles): no credentials
            self._client = storage.Client()
        else:
            # Application Default Credentials, or 111 saying how to provide them, before anything is read.
            from mlbatch.core import gcp_base

            credentials, project = gcp_base.default_credentials()
            self._client = storage.Client(project=project, credentials=credentials)
        self._bucket = self._client.bucket(name)
        self._retry = _retry()

    def _name(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _blob(self, key: str):
        blob = self._bucket.blob(self._name(key))
        blob.chunk_size = UPLOAD_CHUNK
        return blob

    def url(self, key: str) -> str:
        return f"{self.uri}/{key}"

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        from google.api_core import exceptions

        if end is not None and end <= start:
            return b""
        try:
            return self._blob(key).download_as_bytes(start=start or None, end=None if end is None else end - 1, retry=self._retry)
        except exceptions.RequestRangeNotSatisfiable:
            return b""
        except exceptions.NotFound:
            raise NotFound(f"{self.url(key)} does not exist") from None

    def size(self, key: str) -> int:
        blob = self._bucket.get_blob(self._name(key), retry=self._retry)
        if blob is None:
            raise NotFound(f"{self.url(key)} does not exist")
        return int(blob.size)

    def write(self, key: str, data: bytes, *, immutable: bool = False, retain_until: dt.datetime | None = None) -> None:
        """`retain_until`: the object gets a Locked object retention until then, set in the same
        insert (https://cloud.google.com/storage/docs/object-lock): no one can replace or
        delete it, or shorten the retention, before that time; the bucket must allow it."""
        from google.api_core import exceptions

        blob = self._blob(key)
        if retain_until is not None:
            blob.retention.mode = "Locked"
            blob.retention.retain_until_time = retain_until
        try:
            blob.upload_from_string(data, if_generation_match=0 if immutable else None, retry=self._retry)
        except exceptions.PreconditionFailed:
            if self._holds(key, md5=base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()):
                return  # our own earlier try went through and its answer was lost
            raise AlreadyExists(f"{self.url(key)} already exists and is immutable") from None

    def upload(self, key: str, path: Path, *, immutable: bool = False) -> None:
        """Streamed from disk in UPLOAD_CHUNK pieces (a resumable upload past 8 MB)."""
        from google.api_core import exceptions

        blob = self._blob(key)
        try:
            blob.upload_from_filename(str(path), if_generation_match=0 if immutable else None, retry=self._retry)
        except exceptions.PreconditionFailed:
            if self._holds(key, md5=_md5_b64(Path(path))):
                return
            raise AlreadyExists(f"{self.url(key)} already exists and is immutable") from None

    def _holds(self, key: str, md5: str) -> bool:
        blob = self._bucket.get_blob(self._name(key), retry=self._retry)
        return blob is not None and blob.md5_hash == md5

    def append(self, key: str, data: bytes, *, at: int) -> None:
        """Add `data` at offset `at`, exactly once, whatever the bucket answers in between."""
        from google.api_core import exceptions

        if not data:
            return

        def step(looks: int = 0) -> None:
            dest = self._bucket.get_blob(self._name(key), retry=None)
            size = 0 if dest is None else int(dest.size)
            if size == at + len(data):
                return  # already in: an earlier try's answer was lost
            if size != at:
                raise MlbatchError(f"{self.url(key)} holds {size} bytes, the appender expected {at}")
            try:
                if dest is None:
                    self._blob(key).upload_from_string(data, if_generation_match=0, retry=None)
                    return
                if (dest.component_count or 1) >= MAX_COMPONENTS:
                    dest = self._flatten(key, dest)
                part = self._blob(_part_key(key, at))
                part.upload_from_string(data, retry=None)
                dest.compose([dest, part], if_generation_match=dest.generation, retry=None)
            except exceptions.PreconditionFailed:
                if looks >= 3:
                    raise MlbatchError(f"{self.url(key)} keeps changing under its appender") from None
                step(looks + 1)  # the object moved between our look and our write: look again

        self._retry(step)()
        if at:
            with contextlib.suppress(exceptions.NotFound):
                self._blob(_part_key(key, at)).delete(retry=self._retry)

    def _flatten(self, key: str, dest):
        """Rewrite a composite object as one piece, under the generation just read."""
        with tempfile.TemporaryFile() as tmp:
            dest.download_to_file(tmp, retry=None)
            tmp.seek(0)
            fresh = self._blob(key)
            fresh.upload_from_file(tmp, if_generation_match=dest.generation, retry=None)
        return self._bucket.get_blob(self._name(key), retry=None)

    def download(self, key: str, path: Path) -> None:
        from google.api_core import exceptions

        try:
            self._blob(key).download_to_filename(str(path), retry=self._retry)
        except exceptions.NotFound:
            raise NotFound(f"{self.url(key)} does not exist") from None

    def exists(self, key: str) -> bool:
        return self._blob(key).exists(retry=self._retry)

    def read_generation(self, key: str) -> tuple[bytes | None, int]:
        from google.api_core import exceptions

        while True:
            blob = self._bucket.get_blob(self._name(key))
            if blob is None:
                return None, 0
            try:  # the data of exactly that generation, or read both again
                return blob.download_as_bytes(if_generation_match=blob.generation), int(blob.generation)
            except (exceptions.PreconditionFailed, exceptions.NotFound):
                continue

    def write_if_generation(self, key: str, data: bytes, generation: int) -> None:
        from google.api_core import exceptions

        try:
            self._bucket.blob(self._name(key)).upload_from_string(data, if_generation_match=generation)
        except exceptions.PreconditionFailed:
            raise Conflict(f"{self.url(key)} changed since it was read (generation {generation})") from None

    def list(self, prefix: str) -> Iterator[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        for blob in self._client.list_blobs(self._bucket, prefix=self._name(prefix.rstrip("/")) + "/", retry=self._retry):
            if PART_MARK not in blob.name.rsplit("/", 1)[-1]:  # an append's part not yet composed
                yield blob.name[strip:]
