"""Errors as the Compute API returns them (shared by the fakes: tests/support/fake_http.py)."""

from tests.support.fake_http import ApiError, error_body, not_found

__all__ = ["ApiError", "error_body", "not_found"]
