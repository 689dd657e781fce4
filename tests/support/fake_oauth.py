"""A loopback OAuth 2.0 token endpoint for service-account keys (RFC 7523 JWT bearer grant).

A service-account key whose `token_uri` points here makes google-auth (Python) and
golang.org/x/oauth2 (Packer) sign a JWT with the key and trade it for an access token, as
against oauth2.googleapis.com. The endpoint checks the grant type and the RS256 signature
by the key it issued, and answers errors as Google does (400 invalid_grant).
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import urllib.parse
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class FakeOAuth:
    """Issues `token` to whoever proves possession of the service account's key."""

    def __init__(self, token: str, client_email: str = "mlbatch-release@mlbatch-test.iam.gserviceaccount.com"):
        self.token = token
        self.client_email = client_email
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.grants: list[dict] = []  # claims of every assertion accepted
        self.refusals: list[str] = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.token_uri = f"http://127.0.0.1:{self._server.server_port}/token"

    def start(self) -> FakeOAuth:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def write_key(self, path: Path, project: str = "mlbatch-test") -> Path:
        """A service-account key file as the console downloads it, with token_uri pointing here."""
        pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        key = {
            "type": "service_account",
            "project_id": project,
            "private_key_id": "fake-key-1",
            "private_key": pem.decode(),
            "client_email": self.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
        }
        path.write_text(json.dumps(key))
        return path

    def _grant(self, form: dict[str, str]) -> tuple[int, dict]:
        if form.get("grant_type") != JWT_BEARER:
            return 400, {"error": "unsupported_grant_type", "error_description": f"Invalid grant_type: {form.get('grant_type')}"}
        parts = form.get("assertion", "").split(".")
        try:
            self._key.public_key().verify(
                _b64decode(parts[2]), f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
            claims = json.loads(_b64decode(parts[1]))
        except (InvalidSignature, IndexError, ValueError):
            self.refusals.append("Invalid JWT Signature.")
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        if claims.get("iss") != self.client_email or not claims.get("scope"):
            self.refusals.append(f"bad claims {claims}")
            return 400, {"error": "invalid_grant", "error_description": "Invalid email or User ID"}
        self.grants.append(claims)
        return 200, {"access_token": self.token, "expires_in": 3599, "token_type": "Bearer"}

    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if urllib.parse.urlsplit(self.path).path != "/token":
                    status, payload = 404, {"error": "not_found"}
                else:
                    status, payload = fake._grant(dict(urllib.parse.parse_qsl(raw)))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
