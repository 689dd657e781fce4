"""Compute Engine image administration for retention: list, deprecate, delete.

Mutations return global operations, waited on with our own GlobalOperationsClient on the
same endpoint (ExtendedOperation.result() would poll the default endpoint); a wait that
returns before DONE is simply repeated.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from google.api_core import exceptions as gexc

from mlbatch.core.errors import MlbatchError, NotFound, PermissionDenied
from mlbatch.core.settings import Settings
from mlbatch.release.targets.base import BakedImage


class ImageAdmin:
    operation_timeout = 600.0

    def __init__(self, settings: Settings, credentials):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import compute_v1

        self.project = settings.project
        kwargs: dict = {"transport": "rest", "credentials": credentials}
        if settings.compute_endpoint:  # the fake Compute API (settings refuse it outside the test profile)
            kwargs.update(client_options={"api_endpoint": settings.compute_endpoint}, credentials=AnonymousCredentials())
        self.images = compute_v1.ImagesClient(**kwargs)
        self.operations = compute_v1.GlobalOperationsClient(**kwargs)

    def list(self, filter_: str) -> list[BakedImage]:
        from google.cloud import compute_v1

        request = compute_v1.ListImagesRequest(project=self.project, filter=filter_, max_results=50)
        with _translated("list images"):
            found = [
                BakedImage(
                    name=image.name,
                    ref=image.self_link,
                    created=image.creation_timestamp,
                    status=image.deprecated.state if image.deprecated.state else image.status,
                )
                for image in self.images.list(request=request)  # the pager follows nextPageToken
            ]
        return sorted(found, key=lambda i: (i.created, i.name))

    def deprecate(self, name: str) -> None:
        from google.cloud import compute_v1

        with _translated(f"deprecate image {name}"):
            op = self.images.deprecate_unary(
                project=self.project,
                image=name,
                deprecation_status_resource=compute_v1.DeprecationStatus(state="DEPRECATED"),
            )
            self._wait(op, f"deprecate image {name}")

    def delete(self, name: str) -> None:
        with _translated(f"delete image {name}"):
            op = self.images.delete_unary(project=self.project, image=name)
            self._wait(op, f"delete image {name}")

    def _wait(self, op, what: str) -> None:
        deadline = time.monotonic() + self.operation_timeout
        while op.status != op.Status.DONE:
            if time.monotonic() > deadline:
                raise MlbatchError(f"{what}: operation {op.name} not done after {self.operation_timeout:.0f}s")
            op = self.operations.wait(project=self.project, operation=op.name)
        if op.error and op.error.errors:
            raise MlbatchError(f"{what} failed: " + "; ".join(f"{e.code}: {e.message}" for e in op.error.errors))


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Google API errors -> mlbatch errors with their exit codes."""
    try:
        yield
    except gexc.Forbidden as exc:
        raise PermissionDenied(f"{what}: {exc.message} (grant roles/compute.storageAdmin)") from None
    except gexc.NotFound as exc:
        raise NotFound(f"{what}: {exc.message}") from None
    except gexc.GoogleAPICallError as exc:
        raise MlbatchError(f"{what}: {type(exc).__name__}: {exc.message}") from None
