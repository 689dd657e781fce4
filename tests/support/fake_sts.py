"""A loopback Security Token Service (`POST /v1/token`) for downscoping with Credential Access
Boundaries (https://cloud.google.com/iam/docs/downscoping-short-lived-credentials and the
STS reference, https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token).

The request is RFC 8693's token exchange as google.oauth2.sts sends it: form fields
`grant_type=urn:ietf:params:oauth:grant-type:token-exchange`, `subject_token` (an access
token), `subject_token_type` and `requested_token_type` both
`urn:ietf:params:oauth:token-type:access_token`, and `options`: the URL-encoded JSON
`{"accessBoundary": {"accessBoundaryRules": [...]}}`. Checked as STS does: the grant type and
token types, a subject token it can vouch for (else 400 `invalid_grant`), 1 to 10 rules, each
with an `availableResource`, `availablePermissions` of the form `inRole:ROLE` and an optional
`availabilityCondition` with an `expression` (else 400 `invalid_request`). The answer is a new
access token that carries the subject's identity and the boundary: the bucket's IAM model
(tests/support/gcs_iam.py) enforces both on every use.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from typing import Any

from tests.support.cel import ConditionError, evaluate
from tests.support.gcs_iam import BucketIam
from tests.support.loopback import JsonServer

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN, not a secret
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN, not a secret
MAX_RULES = 10


class StsError(Exception):
    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error, self.description = error, description


class FakeSts:
    def __init__(self, iam: BucketIam):
        self.iam = iam
        self.exchanges: list[dict[str, Any]] = []  # the boundaries it issued tokens for
        self._http = JsonServer(self._respond)
        self.token_url = f"{self._http.url}/v1/token"

    def start(self) -> FakeSts:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def _rules(self, options: str) -> list[dict[str, Any]]:
        try:
            boundary = json.loads(urllib.parse.unquote(options))["accessBoundary"]
            rules = boundary["accessBoundaryRules"]
        except (ValueError, KeyError, TypeError):
            raise StsError("invalid_request", "options must be a JSON accessBoundary with accessBoundaryRules") from None
        if not isinstance(rules, list) or not 1 <= len(rules) <= MAX_RULES:
            raise StsError("invalid_request", f"An access boundary must have between 1 and {MAX_RULES} rules")
        for rule in rules:
            permissions = rule.get("availablePermissions")
            if not rule.get("availableResource") or not permissions:
                raise StsError("invalid_request", "Each rule needs an availableResource and availablePermissions")
            if not all(isinstance(p, str) and p.startswith("inRole:") for p in permissions):
                raise StsError("invalid_request", f"availablePermissions must be inRole:ROLE values, got {permissions}")
            condition = rule.get("availabilityCondition")
            if condition is not None:
                try:
                    evaluate(condition["expression"], {"name": "", "type": "", "service": ""}, {})
                except (ConditionError, KeyError, TypeError) as exc:
                    raise StsError("invalid_request", f"invalid availabilityCondition: {exc}") from None
        return rules

    def _exchange(self, form: dict[str, str]) -> dict[str, Any]:
        if form.get("grant_type") != TOKEN_EXCHANGE:
            raise StsError("unsupported_grant_type", f"Unsupported grant type {form.get('grant_type')!r}")
        if form.get("subject_token_type") != ACCESS_TOKEN_TYPE or form.get("requested_token_type") != ACCESS_TOKEN_TYPE:
            raise StsError("invalid_request", "subject_token_type and requested_token_type must be access tokens")
        subject = self.iam.token_principal(form.get("subject_token", ""))
        if subject is None:
            raise StsError("invalid_grant", "The subject token is invalid or expired")
        rules = self._rules(form.get("options", ""))
        token = "ya29.downscoped-" + secrets.token_urlsafe(16)
        self.iam.add_token(token, subject.email, rules, on=subject)
        self.exchanges.append({"account": subject.email, "rules": rules})
        return {"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer", "expires_in": 3600}

    def _respond(self, verb: str, path: str, headers, raw: bytes) -> tuple[int, dict[str, Any]]:
        if verb != "POST" or urllib.parse.urlsplit(path).path != "/v1/token":
            return 404, {"error": "not_found", "error_description": path}
        try:
            return 200, self._exchange(dict(urllib.parse.parse_qsl(raw.decode())))
        except StsError as exc:
            return 400, {"error": exc.error, "error_description": exc.description}
