"""A loopback OAuth 2.0 token endpoint for service-account keys (RFC 7523 JWT bearer grant).

The test writes a service-account key whose `token_uri` points here; google-auth then signs
a JWT with the key and trades it for an access token, exactly as against
oauth2.googleapis.com. The endpoint checks what Google checks: the grant type, the RS256
signature by the key it knows, the issuer, the audience, a scope and the time window; it
answers errors the way Google does (400 invalid_grant / unsupported_grant_type).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.loopback import JsonServer

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The audience Google's token endpoint requires; google-auth signs it whatever the token_uri.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
MAX_LIFETIME = 3600  # Google refuses assertions valid for longer than an hour


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class GrantError(Exception):
    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error, self.description = error, description


class FakeOAuth:
    """Issues `token` to whoever proves possession of the service account's key."""

    def __init__(self, token: str, client_email: str = "mlbatch-release@mlbatch-test.iam.gserviceaccount.com"):
        self.token = token
        self.client_email = client_email
        self.key_id = "fake-key-1"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.grants: list[dict] = []  # claims of every assertion accepted
        self.refusals: list[str] = []
        self._http = JsonServer(self._respond)
        self.token_uri = f"{self._http.url}/token"

    def start(self) -> FakeOAuth:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def write_key(self, path: Path, project: str = "mlbatch-test") -> Path:
        """A service-account key file as the console downloads it, with token_uri pointing here."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        key = {
            "type": "service_account",
            "project_id": project,
            "private_key_id": self.key_id,
            "private_key": pem,
            "client_email": self.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
        }
        path.write_text(json.dumps(key))
        return path

    # --- the grant -----------------------------------------------------------------------

    def _verify(self, assertion: str) -> dict:
        """The claims of a JWT signed (RS256) by the service account's key, in its time window."""
        parts = assertion.split(".")
        if len(parts) != 3:
            raise GrantError("invalid_grant", "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe")
        header, claims = json.loads(_b64decode(parts[0])), json.loads(_b64decode(parts[1]))
        if header.get("alg") != "RS256":
            raise GrantError("invalid_grant", f"Invalid JWT: unsupported algorithm {header.get('alg')!r}")
        if header.get("kid") not in (None, self.key_id):
            raise GrantError("invalid_grant", "Invalid JWT Signature.")
        try:
            self._key.public_key().verify(
                _b64decode(parts[2]), f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            raise GrantError("invalid_grant", "Invalid JWT Signature.") from None
        if claims.get("iss") != self.client_email:
            raise GrantError("invalid_grant", "Invalid email or User ID")
        now = time.time()
        iat, exp = claims.get("iat", 0), claims.get("exp", 0)
        if not (iat - 300 <= now <= exp) or exp - iat > MAX_LIFETIME:
            raise GrantError("invalid_grant", "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe")
        return claims

    def _grant(self, form: dict[str, str]) -> dict:
        if form.get("grant_type") != JWT_BEARER:
            raise GrantError("unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type', '')}")
        claims = self._verify(form.get("assertion", ""))
        if claims.get("aud") not in (GOOGLE_TOKEN_AUDIENCE, self.token_uri):
            raise GrantError("invalid_grant", f"Invalid JWT: audience {claims.get('aud')!r} is not {GOOGLE_TOKEN_AUDIENCE}")
        if not claims.get("scope") and not claims.get("target_audience"):
            raise GrantError("invalid_scope", "Empty or missing scope not allowed.")
        self.grants.append(claims)
        return {"access_token": self.token, "expires_in": 3599, "token_type": "Bearer"}

    def authorizes(self, authorization: str) -> bool:
        """Whether a Google API would accept this Authorization header: the access token this
        endpoint issued, or a self-signed JWT of the service account (which the generated
        google-cloud-* clients send for service-account keys instead of asking for a token)."""
        kind, _, credential = authorization.partition(" ")
        if kind != "Bearer" or not credential:
            return False
        if credential == self.token:
            return True
        try:
            claims = self._verify(credential)
        except (GrantError, ValueError):
            return False
        return claims.get("sub") == self.client_email and bool(claims.get("aud") or claims.get("scope"))

    def _respond(self, verb: str, path: str, headers, raw: bytes) -> tuple[int, dict]:
        if verb != "POST" or urllib.parse.urlsplit(path).path != "/token":
            return 404, {"error": "not_found", "error_description": path}
        try:
            return 200, self._grant(dict(urllib.parse.parse_qsl(raw.decode())))
        except GrantError as exc:
            self.refusals.append(exc.description)
            return 400, {"error": exc.error, "error_description": exc.description}
