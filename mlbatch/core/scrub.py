"""Anything token-shaped taken out of text that quotes another program's output.

Every message that quotes what a subprocess printed (Packer's last lines, a docker build's,
the image tests', git's, iptables', nvidia-smi's) goes through `scrub` before it is raised:
such messages end up in CI logs (Drone keeps them) and in notifications, where a credential a
tool printed would outlive the run. mlbatch itself keeps credentials off command lines and out
of its messages (docs/architecture.md, "The VM image"); this is the net under what other
programs print. It replaces, with `***`:

- Google OAuth 2.0 access tokens (`ya29.`...) and refresh tokens (`1//`...), API keys
  (`AIza`...) and OAuth client secrets (`GOCSPX-`...);
- JSON Web Tokens (three base64url parts, the first `eyJ`: a registry's bearer token, an ID
  token, a service account's self-signed JWT);
- the credentials of an HTTP `Authorization: Bearer ...` or `Basic ...`;
- the password of a URL (`https://user:SECRET@host/`);
- the value of anything named like a secret: `password=`, `token: `, `"client_secret": "..."`,
  `access_token=` (and Docker's `"auth": "..."`), whether written `k=v`, `k: v` or as JSON;
- a PEM private key (a service account key file's `private_key`), whole.

and, first, every secret this process was given (`remember`: the access token of the
Application Default Credentials, registered where core.gcp_base obtains or refreshes it), whatever
its shape: a token the patterns would miss still goes.

It errs towards hiding: a value that merely looks like a token goes too. What a person needs
to act on a failure (which step, which file, which image digest, what the tool said) stays.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

MASK = "***"
MIN_KNOWN = 8  # shorter values are masked by shape only: replacing them everywhere would mangle text

_known: set[str] = set()
_known_lock = threading.Lock()

# (pattern, replacement), applied in order: whole credentials first, then named values.
_RULES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    (
        re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|$)", re.S),
        rf"-----BEGIN \1PRIVATE KEY-----{MASK}-----END \1PRIVATE KEY-----",
    ),
    (re.compile(r"\b([a-z][a-z0-9+.-]*://[^/\s:@]+):[^/\s@]+@", re.I), rf"\1:{MASK}@"),
    (re.compile(r"\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{16,}", re.I), rf"\1\2{MASK}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"\bya29\.[A-Za-z0-9._-]+"), f"ya29.{MASK}"),
    (re.compile(r"(?<![\w/])1//[A-Za-z0-9_-]{16,}"), f"1//{MASK}"),
    (re.compile(r"\bAIza[A-Za-z0-9_-]{30,}"), f"AIza{MASK}"),
    (re.compile(r"\bGOCSPX-[A-Za-z0-9_-]+"), f"GOCSPX-{MASK}"),
    (
        # A secret-named key, its separator (= or :, JSON's quotes around the key), its value: a
        # quoted string whole (JSON's escapes in it too), else up to a space or delimiter.
        re.compile(
            r"""(?ix)
            ( ["']? \b (?: [\w.-]*? (?:password|passwd|secret|token|api[_-]?key|private[_-]?key|access[_-]?key)
                          [\w.-]* | auth ) \b ["']?
              \s* [:=] \s* )
            (?: "(?:[^"\\]|\\.)*" | '[^']*' | [^\s"',;&{}\[\]]+ )
            """
        ),
        lambda match: match[1] + _masked(match[0][len(match[1]) :]),
    ),
)


def _masked(value: str) -> str:
    """The value masked, in the quotes it came in."""
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{quote}{MASK}{quote}"


def remember(secret: str | None) -> None:
    """`secret` (a credential this process holds) is masked by `scrub` from now on, whatever its shape."""
    if secret and len(secret) >= MIN_KNOWN:
        with _known_lock:
            _known.add(secret)


def scrub(text: str) -> str:
    """`text` with every remembered secret and every token-shaped thing in it replaced by ***."""
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)  # the longest first: one may contain another
    for secret in known:
        text = text.replace(secret, MASK)
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text
