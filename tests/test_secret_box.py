"""The master key (from the environment or a 0600 key file) and the box that seals credentials."""

from __future__ import annotations

import os
import stat
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from connectors import secret_box
from connectors.secret_box import KEY_ENV, KEY_FILE_NAME, SecretBox, SecretBoxError, load_master_key


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_from_env_is_used_and_no_key_file_is_written(tmp_path: Path) -> None:
    key = Fernet.generate_key()
    assert load_master_key(tmp_path / "home", {KEY_ENV: key.decode()}) == key
    assert not (tmp_path / "home" / KEY_FILE_NAME).exists()


@pytest.mark.parametrize("value", ["not-a-key-s3cr3t-VALUE", "", "c2hvcnQ=", "x" * 44])
def test_invalid_env_key_names_the_variable_and_never_its_value(tmp_path: Path, value: str) -> None:
    with pytest.raises(SecretBoxError, match=KEY_ENV) as raised:
        load_master_key(tmp_path, {KEY_ENV: value})
    shown = "".join(traceback.format_exception(raised.value))
    assert not value or value not in shown


def test_key_file_is_created_0600_in_a_0700_home(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    key = load_master_key(home, {})
    path = home / KEY_FILE_NAME
    assert mode_of(path) == 0o600
    assert mode_of(home) == 0o700
    assert path.read_bytes().strip() == key
    assert load_master_key(home, {}) == key
    assert sorted(os.listdir(home)) == [KEY_FILE_NAME]


def test_key_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        load_master_key(tmp_path, {})
    finally:
        os.umask(old)
    assert mode_of(tmp_path / KEY_FILE_NAME) == 0o600


@pytest.mark.parametrize(("mode", "word"), [(0o644, "readable"), (0o640, "readable"), (0o620, "writable")])
def test_key_file_open_to_others_is_refused(tmp_path: Path, mode: int, word: str) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_bytes(Fernet.generate_key())
    path.chmod(mode)
    with pytest.raises(SecretBoxError) as raised:
        load_master_key(tmp_path, {})
    assert str(raised.value) == f"{path} is {word} by other users (mode {mode:04o}): chmod 600 it"


@pytest.mark.parametrize("content", [b"", b"\n", b"not a key at all"])
def test_empty_or_invalid_key_file_is_refused_and_kept(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(SecretBoxError, match=f"{KEY_FILE_NAME} is empty or not a Fernet key"):
        load_master_key(tmp_path, {})
    assert path.read_bytes() == content


def test_concurrent_creators_end_with_one_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight threads all find no key file and each generate a key at the same moment: one key wins,
    every thread gets it, and no temporary file is left."""
    creators = 8
    meeting = threading.Barrier(creators, timeout=10)
    generate = Fernet.generate_key

    def generate_together() -> bytes:
        meeting.wait()
        return generate()

    monkeypatch.setattr(secret_box.Fernet, "generate_key", staticmethod(generate_together))
    with ThreadPoolExecutor(creators) as pool:
        loads = [pool.submit(load_master_key, tmp_path, {}) for _ in range(creators)]
        keys = [load.result(timeout=30) for load in loads]
    assert len(set(keys)) == 1
    assert (tmp_path / KEY_FILE_NAME).read_bytes().strip() == keys[0]
    assert mode_of(tmp_path / KEY_FILE_NAME) == 0o600
    assert os.listdir(tmp_path) == [KEY_FILE_NAME]


def test_box_round_trips_a_credential() -> None:
    box = SecretBox(Fernet.generate_key())
    secrets = {"openAI_key": "sk-live-abc", "access_key": "AKIA123"}
    token = box.seal(secrets)
    assert "sk-live-abc" not in token
    assert box.open(token) == secrets


def test_another_key_cannot_open_a_sealed_credential() -> None:
    token = SecretBox(Fernet.generate_key()).seal({"key": "value"})
    with pytest.raises(SecretBoxError) as raised:
        SecretBox(Fernet.generate_key()).open(token)
    assert str(raised.value) == (
        "cannot decrypt a stored credential: the master key is not the one it was stored with"
    )


def test_box_never_shows_its_key() -> None:
    key = Fernet.generate_key()
    box = SecretBox(key)
    assert key.decode() not in repr(box)
    assert key.decode() not in str(box)
    assert not hasattr(box, "__dict__")


def test_box_refuses_a_malformed_key() -> None:
    with pytest.raises(SecretBoxError, match="not a Fernet key"):
        SecretBox(b"short")
