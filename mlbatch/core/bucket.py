"""The bucket: a `file://` folder or a `gs://` bucket behind one small interface.

Immutable objects (manifests, code bundles, run specs) are created with "only if
absent" semantics: `if_generation_match=0` on GCS, an exclusive hard link on disk.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from mlbatch.core.errors import AlreadyExists, BadInput, NotFound


class Bucket(Protocol):
    uri: str

    def read(self, key: str) -> bytes: ...
    def write(self, key: str, data: bytes, *, immutable: bool = False) -> None: ...
    def append(self, key: str, data: bytes) -> None: ...
    def upload(self, key: str, path: Path, *, immutable: bool = False) -> None: ...
    def download(self, key: str, path: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def url(self, key: str) -> str: ...


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

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{self.url(key)} does not exist") from None

    def write(self, key: str, data: bytes, *, immutable: bool = False) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
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

    def append(self, key: str, data: bytes) -> None:
        """Add bytes at the end (a growing log): only the new bytes are written."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "ab") as fh:
            fh.write(data)

    def upload(self, key: str, path: Path, *, immutable: bool = False) -> None:
        self.write(key, Path(path).read_bytes(), immutable=immutable)

    def download(self, key: str, path: Path) -> None:
        Path(path).write_bytes(self.read(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in sorted(files):
                if not name.startswith(".tmp-"):
                    yield str(Path(dirpath, name).relative_to(self.root))


class GcsBucket:
    """gs://bucket[/prefix] through google-cloud-storage (imported only when used)."""

    def __init__(self, uri: str):
        from google.cloud import storage  # type: ignore[attr-defined]

        name, _, prefix = uri[len("gs://") :].partition("/")
        self.uri = uri.rstrip("/")
        self.prefix = prefix.strip("/")
        self._client = storage.Client()
        self._bucket = self._client.bucket(name)
        self._appended: set[str] = set()  # keys this process appended to (they exist)

    def _name(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def url(self, key: str) -> str:
        return f"{self.uri}/{key}"

    def read(self, key: str) -> bytes:
        from google.api_core import exceptions

        try:
            return self._bucket.blob(self._name(key)).download_as_bytes()
        except exceptions.NotFound:
            raise NotFound(f"{self.url(key)} does not exist") from None

    def write(self, key: str, data: bytes, *, immutable: bool = False) -> None:
        from google.api_core import exceptions

        blob = self._bucket.blob(self._name(key))
        try:
            blob.upload_from_string(data, if_generation_match=0 if immutable else None)
        except exceptions.PreconditionFailed:
            raise AlreadyExists(f"{self.url(key)} already exists and is immutable") from None

    def append(self, key: str, data: bytes) -> None:
        """Add bytes at the end (a growing log): upload only them, as a part, and compose the
        object with it on the server; the bytes uploaded grow linearly with the object."""
        import uuid

        from google.api_core import exceptions

        dest = self._bucket.blob(self._name(key))
        part = self._bucket.blob(f"{self._name(key)}.append-{uuid.uuid4().hex}")
        part.upload_from_string(data)
        try:
            # Whether the object exists is asked once per key (a growing log is appended to often).
            exists = key in self._appended or dest.exists()
            dest.compose([dest, part] if exists else [part])
            self._appended.add(key)
        finally:
            with contextlib.suppress(exceptions.GoogleAPICallError):  # a stray part must not repeat the bytes
                part.delete()

    def upload(self, key: str, path: Path, *, immutable: bool = False) -> None:
        from google.api_core import exceptions

        blob = self._bucket.blob(self._name(key))
        try:
            blob.upload_from_filename(str(path), if_generation_match=0 if immutable else None)
        except exceptions.PreconditionFailed:
            raise AlreadyExists(f"{self.url(key)} already exists and is immutable") from None

    def download(self, key: str, path: Path) -> None:
        from google.api_core import exceptions

        try:
            self._bucket.blob(self._name(key)).download_to_filename(str(path))
        except exceptions.NotFound:
            raise NotFound(f"{self.url(key)} does not exist") from None

    def exists(self, key: str) -> bool:
        return self._bucket.blob(self._name(key)).exists()

    def list(self, prefix: str) -> Iterator[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        for blob in self._client.list_blobs(self._bucket, prefix=self._name(prefix.rstrip("/")) + "/"):
            yield blob.name[strip:]
