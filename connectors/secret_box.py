"""The secret box: connector credentials that `mlbatch serve-api` stores are sealed with Fernet.

The master key comes from `$MLBATCH_MASTER_KEY` or else from `$MLBATCH_HOME/master.key`, which is
created on first use with mode 0600: the key is written whole to a private temporary file that is
then linked to its final name, so the key file never exists partly written or with other modes,
and of several processes starting at once one creates the key and the others read it. A key file
that other users could read is refused, and no message ever shows a key.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

import orjson
from cryptography.fernet import Fernet, InvalidToken

KEY_ENV = "MLBATCH_MASTER_KEY"
KEY_FILE_NAME = "master.key"
WRONG_KEY = "cannot decrypt a stored credential: the master key is not the one it was stored with"
_PRIVATE_BITS = stat.S_IRWXG | stat.S_IRWXO


class SecretBoxError(ValueError):
    """The master key is missing, malformed or exposed, or a sealed credential cannot be opened."""


def is_fernet_key(key: bytes) -> bool:
    """Whether `key` is 32 url-safe base64-encoded bytes, as `Fernet.generate_key()` makes."""
    try:
        Fernet(key)
    except ValueError:
        return False
    return True


def exposure(mode: int) -> str:
    """How a file of this mode is open to users other than its owner ('' when it is not)."""
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return "readable"
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "writable"
    return "accessible" if mode & _PRIVATE_BITS else ""


def key_from_env(value: str) -> bytes:
    key = value.strip().encode("utf-8")
    if not is_fernet_key(key):
        raise SecretBoxError(
            f"{KEY_ENV} is not a Fernet key (32 url-safe base64-encoded bytes, as "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'` "
            "prints); set it to such a key, or unset it to use a key file under $MLBATCH_HOME"
        )
    return key


def read_key_file(path: Path) -> bytes:
    """The key in an existing key file, refused when other users could read it or it is no key."""
    with path.open("rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        exposed = exposure(mode)
        if exposed:
            raise SecretBoxError(
                f"{path} is {exposed} by other users (mode {stat.S_IMODE(mode):04o}): chmod 600 it"
            )
        key = file.read().strip()
    if not is_fernet_key(key):
        raise SecretBoxError(
            f"{path} is empty or not a Fernet key (32 url-safe base64-encoded bytes); restore the key "
            f"the credentials were stored with, or set {KEY_ENV}"
        )
    return key


def create_key_file(path: Path) -> bytes:
    """A new key written to `path` with mode 0600, or the key of whoever created `path` first."""
    key = Fernet.generate_key()
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(key + b"\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return read_key_file(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    sync_directory(path.parent)
    return key


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_master_key(home: Path, environ: Mapping[str, str] = os.environ, create: bool = True) -> bytes:
    """The master key: `$MLBATCH_MASTER_KEY` if set, else `home/master.key`, created on first use
    (unless not `create`: then a missing key is a SecretBoxError)."""
    if KEY_ENV in environ:
        return key_from_env(environ[KEY_ENV])
    path = home / KEY_FILE_NAME
    try:
        return read_key_file(path)
    except FileNotFoundError:
        if not create:
            missing = f"no master key: set ${KEY_ENV} as serve-api has it, or keep {path}"
            raise SecretBoxError(missing) from None
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return create_key_file(path)


class SecretBox:
    """Seals a credential (a dict of strings) into a Fernet token and opens it again."""

    __slots__ = ("_fernet",)

    def __init__(self, key: bytes) -> None:
        if not is_fernet_key(key):
            raise SecretBoxError("the master key is not a Fernet key (32 url-safe base64-encoded bytes)")
        self._fernet = Fernet(key)

    def __repr__(self) -> str:
        return "SecretBox(key=<hidden>)"

    def seal(self, secrets: Mapping[str, str]) -> str:
        return self._fernet.encrypt(orjson.dumps(dict(secrets))).decode("ascii")

    def open(self, token: str) -> dict[str, str]:
        try:
            return orjson.loads(self._fernet.decrypt(token))
        except InvalidToken:
            raise SecretBoxError(WRONG_KEY) from None
