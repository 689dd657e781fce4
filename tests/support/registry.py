"""A second docker-registry on loopback that requires a login, as Artifact Registry does, and
lets each identity do what its role on the repository allows.

Artifact Registry takes `docker login -u oauth2accesstoken` with an OAuth access token for
the password (https://cloud.google.com/artifact-registry/docs/docker/authentication#token);
what the token's holder may then do is its role on the repository: roles/artifactregistry.reader
pulls, roles/artifactregistry.writer pushes and pulls
(https://cloud.google.com/artifact-registry/docs/access-control#roles), and a VM's token only
as far as the VM's access scopes reach: pulling needs the read-only storage scope (or a wider
one: read-write, full-control, cloud-platform), pushing a storage scope with write access
(https://cloud.google.com/artifact-registry/docs/integrate-compute).

The registry is the distribution `docker-registry` with token authentication (its `auth.token`
configuration), in front of which a token server of ours stands, as the Docker token
authentication specification has it (https://distribution.github.io/distribution/spec/auth/token/):
a request without a token is answered 401 with `WWW-Authenticate: Bearer realm=...`; the
client asks the realm for a token with HTTP Basic credentials (oauth2accesstoken and the
access token: a GET, or the OAuth2 password grant as a POST), and the token server answers
with a JWT (RS256, its certificate in the `x5c` header, which the registry checks against its
root bundle: https://distribution.github.io/distribution/spec/auth/jwt/) granting the actions
asked for that the caller's identity may do. Credentials nobody issued are refused (401); no
credentials at all get a token granting nothing, so a push or pull is refused by the registry
("authentication required"). The engine treats 127.0.0.0/8 registries as insecure: plain http.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import json
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from tests.support.gcs import _free_port
from tests.support.loopback import JsonServer

READER = "roles/artifactregistry.reader"
WRITER = "roles/artifactregistry.writer"
ROLE_ACTIONS = {READER: {"pull"}, WRITER: {"pull", "push"}}
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_STORAGE = "https://www.googleapis.com/auth/devstorage."
# The access scopes that let a token pull, and push (integrate-compute, above).
SCOPE_ACTIONS = {
    _STORAGE + "read_only": {"pull"},
    _STORAGE + "read_write": {"pull", "push"},
    _STORAGE + "full_control": {"pull", "push"},
    CLOUD_PLATFORM: {"pull", "push"},
}
SERVICE = "mlbatch-test-registry"
ISSUER = "mlbatch-fake-registry-auth"

CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}/data
  delete:
    enabled: true
http:
  addr: {addr}
auth:
  token:
    realm: {realm}
    service: {service}
    issuer: {issuer}
    rootcertbundle: {root}/token-signer.pem
"""


@dataclasses.dataclass(frozen=True)
class Caller:
    """Whose an access token is, and the scopes it was issued with."""

    account: str
    scopes: tuple[str, ...]


# An access token -> its caller; None for a token nobody issued.
Who = Callable[[str], Caller | None]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """The realm: registry tokens for callers `who` knows, with the actions `roles` and scopes allow."""

    def __init__(self, who: Who, roles: Mapping[str, str]):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.who, self.roles = who, roles
        self.requests: list[tuple[str, str]] = []  # (account or "anonymous" or "refused", scope asked)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = self._cert.public_bytes(serialization.Encoding.PEM)
        self._server = JsonServer(self._respond)
        self.realm = f"{self._server.url}/token"

    @contextlib.contextmanager
    def running(self) -> Iterator[TokenServer]:
        self._server.start()
        try:
            yield self
        finally:
            self._server.stop()

    def allowed(self, caller: Caller) -> set[str]:
        by_role = ROLE_ACTIONS.get(self.roles.get(caller.account, ""), set())
        by_scope = set().union(*(SCOPE_ACTIONS.get(scope, set()) for scope in caller.scopes))
        return by_role & by_scope

    def _jwt(self, subject: str, access: list[dict]) -> str:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        der = self._cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def grant(self, username: str | None, password: str | None, scopes: list[str]) -> tuple[int, dict]:
        """(status, body) for a token request; username None: no credentials (anonymous)."""
        caller = None
        if username is not None:
            caller = self.who(password or "") if username == "oauth2accesstoken" else None
            if caller is None:
                self.requests.append(("refused", " ".join(scopes)))
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "No valid credential was supplied."}]}
        allowed = self.allowed(caller) if caller else set()
        access = []
        for scope in scopes:  # repository:NAME:ACTIONS; a name may hold colons only with a port, never here
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and name:
                access.append({"type": kind, "name": name, "actions": sorted(set(actions.split(",")) & allowed)})
        self.requests.append((caller.account if caller else "anonymous", " ".join(scopes)))
        token = self._jwt(caller.account if caller else "", access)
        issued = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return 200, {"token": token, "access_token": token, "expires_in": 300, "issued_at": issued}

    def _respond(self, verb: str, path: str, headers, raw: bytes) -> tuple[int, dict]:
        """The realm's answer: a GET with HTTP Basic credentials (or none), or the OAuth2 password grant as a POST."""
        if verb == "GET":
            authorization = headers.get("Authorization", "")
            user = password = None
            if authorization.lower().startswith("basic "):
                user, _, password = base64.b64decode(authorization[6:]).decode(errors="replace").partition(":")
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
            return self.grant(user, password, query.get("scope", []))
        if verb == "POST":
            form = urllib.parse.parse_qs(raw.decode())
            if form.get("grant_type") != ["password"]:
                return 400, {"error": "unsupported_grant_type"}
            user, password = form.get("username", [""])[0], form.get("password", [""])[0]
            return self.grant(user, password, " ".join(form.get("scope", [])).split())
        return 405, {"error": "method_not_allowed"}

    def bearer(self, token: str, scope: str) -> str:
        """A registry token for `scope`, asked with the access token `token` (a test reading the registry)."""
        status, body = self.grant("oauth2accesstoken", token, [scope])
        if status != 200:
            raise PermissionError(f"the token server refused the token: {body}")
        return body["token"]


@dataclasses.dataclass(frozen=True)
class Registry:
    address: str  # host:port
    auth: TokenServer


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def authenticating_registry(who: Who, roles: Mapping[str, str]) -> Iterator[Registry]:
    """A registry at 127.0.0.1:PORT whose callers are who(access token), each allowed what its role
    (roles: account -> READER or WRITER) and its token's scopes allow."""
    auth = TokenServer(who, roles)
    root = Path(tempfile.mkdtemp(prefix="mlbatch-auth-registry-"))
    addr = f"127.0.0.1:{_free_port()}"
    (root / "token-signer.pem").write_bytes(auth.cert_pem)
    (root / "config.yml").write_text(CONFIG.format(root=root, addr=addr, realm=auth.realm, service=SERVICE, issuer=ISSUER))
    log = (root / "registry.log").open("wb")
    with auth.running():
        proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if _status(f"http://{addr}/v2/") == 401:  # up, and asking for a token
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the authenticating registry did not start: {(root / 'registry.log').read_text()}")
                time.sleep(0.1)
            yield Registry(addr, auth)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()
            shutil.rmtree(root, ignore_errors=True)
