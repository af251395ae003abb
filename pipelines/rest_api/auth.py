"""Who may call `mlbatch serve-api`: the auth file, the check of a request's `Authorization` header,
and the 401 answer OpenSearch's security plugin gives.

The auth file (`serve-api` requires one for any `--host` but 127.0.0.1) holds one entry per line:

    # Comments and blank lines are ignored; so is whitespace around a line.
    # A bearer token, for `Authorization: Bearer 3f9c...`:
    bearer 3f9c1e0b7d2a45c8b6e1f0a9d8c7b6a5
    # A basic-auth user: the user name, a colon, the password:
    alice:correct horse:battery staple

A user line is split at its first colon, so a password may hold colons (a user name may not, as
RFC 7617 says); `#` starts a comment only at the start of a line, so a password may hold one.
Entries are printable ASCII, as clients encode other characters differently; a token
holds no spaces. The file needs at least one entry, and only its owner may read or write it
(`chmod 600`). Errors name the file and line, never what the line holds.

`authorized` compares the offered secret with every entry of its kind in constant time
(`hmac.compare_digest` on SHA-256 digests, so lengths do not show either) and never stops at the
first match, so the time taken tells nothing about which entry matched or how much of one did.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.secret_box import exposure

WWW_AUTHENTICATE = 'Basic realm="OpenSearch Security"'
ECHOED_PATH_CHARS = 200
_PRINTABLE = frozenset(range(0x20, 0x7F))


class AuthFileError(ValueError):
    """An auth file `serve-api` cannot use; the message names the file and line, never a secret."""


@dataclass(frozen=True, repr=False)
class Credentials:
    """The basic-auth users (user, password) and the bearer tokens of an auth file, as bytes."""

    users: tuple[tuple[bytes, bytes], ...]
    tokens: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"Credentials(<{len(self.users)} users>, <{len(self.tokens)} bearer tokens>)"


def _read_private(path: Path) -> str:
    """The text of `path` (each byte a character, for the lines to check), refused when anyone but
    its owner may read or change it."""
    try:
        with path.open("rb") as handle:
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            data = handle.read()
    except OSError as error:
        raise AuthFileError(f"{path}: cannot read the auth file ({error.strerror})") from None
    exposed = exposure(mode)
    if exposed:
        raise AuthFileError(f"{path} is {exposed} by other users (mode {mode:04o}): chmod 600 it")
    return data.decode("latin-1")


def _entry(line: str) -> tuple[str, bytes, bytes] | str:
    """("user", name, password) or ("bearer token", token, b"") for one line, or why it is refused."""
    if any(ord(char) not in _PRINTABLE for char in line):
        return "holds a tab, a control character or a non-ASCII character; use printable ASCII"
    scheme, _, rest = line.partition(" ")
    if scheme.lower() == "bearer":
        token = rest.strip()
        if not token:
            return "a bearer entry needs a token after 'bearer'"
        if " " in token:
            return "a bearer token cannot hold spaces"
        return ("bearer token", token.encode(), b"")
    user, colon, password = line.partition(":")
    if not colon or not user:
        return "expected 'bearer <token>' or '<user>:<password>'"
    if not password:
        return "the user has an empty password"
    return ("user", user.encode(), password.encode())


def parse_auth_text(text: str, source: str) -> Credentials:
    """The credentials in an auth file's `text`; AuthFileError names `source` and the line."""
    first_lines: dict[tuple[str, bytes], int] = {}
    users: list[tuple[bytes, bytes]] = []
    tokens: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        entry = _entry(line)
        if isinstance(entry, str):
            raise AuthFileError(f"{source}, line {number}: {entry}")
        kind, name, password = entry
        if (kind, name) in first_lines:
            raise AuthFileError(
                f"{source}, line {number}: repeats the {kind} of line {first_lines[kind, name]}"
            )
        first_lines[kind, name] = number
        if kind == "user":
            users.append((name, password))
        else:
            tokens.append(name)
    if not first_lines:
        raise AuthFileError(f"{source}: no entries; add 'bearer <token>' or '<user>:<password>' lines")
    return Credentials(users=tuple(users), tokens=tuple(tokens))


def load_auth_file(path: Path) -> Credentials:
    """The credentials of the auth file at `path`; AuthFileError for a file it cannot use."""
    return parse_auth_text(_read_private(path), str(path))


def _same(offered: bytes, known: bytes) -> bool:
    return hmac.compare_digest(hashlib.sha256(offered).digest(), hashlib.sha256(known).digest())


def _basic(value: str) -> tuple[bytes, bytes] | None:
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def authorized(credentials: Credentials, authorization_header: str | None) -> bool:
    """Whether an `Authorization` header (`Basic <base64 user:password>` or `Bearer <token>`, the
    scheme in any case) names an entry of `credentials`; False for anything else."""
    scheme, _, value = (authorization_header or "").strip().partition(" ")
    value = value.strip()
    matched = False
    if scheme.lower() == "basic" and (pair := _basic(value)) is not None:
        for user, password in credentials.users:
            user_matches = _same(pair[0], user)
            password_matches = _same(pair[1], password)
            matched |= user_matches & password_matches
    elif scheme.lower() == "bearer" and value:
        offered = value.encode("utf-8", "surrogateescape")
        for token in credentials.tokens:
            matched |= _same(offered, token)
    return matched


def unauthorized_reply(path: str, wrong: bool = False) -> tuple[int, dict[str, Any]]:
    """The security plugin's 401 for a request to `path` (echoed without its query string, cut to
    200 characters) that brought no credentials, or (`wrong`) credentials that match no entry."""
    shown = path.partition("?")[0][:ECHOED_PATH_CHARS]
    reason = (
        "unable to authenticate user"
        if wrong
        else f"missing authentication credentials for REST request [{shown}]"
    )
    cause = {"type": "security_exception", "reason": reason}
    return 401, {"error": {"root_cause": [cause], **cause}, "status": 401}
