"""Who may call `serve-api`: the auth file (users, bearer tokens, refusals that never quote a secret),
the `Authorization` header check in constant time against every entry, and the security plugin's 401."""

from __future__ import annotations

import base64
import hmac

import pytest

from pipelines.rest_api import auth
from pipelines.rest_api.auth import AuthFileError, Credentials, authorized, load_auth_file, unauthorized_reply

SECRET = "s3cr3t-Xy9"
AUTH_FILE = f"""# who may call serve-api

alice:{SECRET}
  bob:pa:ss:word #with spaces
bearer tok-{SECRET}
BEARER second-token
"""


def write(tmp_path, text: str, mode: int = 0o600):
    path = tmp_path / "auth"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def credentials(tmp_path) -> Credentials:
    return load_auth_file(write(tmp_path, AUTH_FILE))


def basic(user: str, password: str, scheme: str = "Basic") -> str:
    return f"{scheme} {base64.b64encode(f'{user}:{password}'.encode()).decode()}"


def test_the_auth_file_holds_users_and_tokens_skipping_comments_and_blank_lines(credentials):
    assert credentials.users == ((b"alice", SECRET.encode()), (b"bob", b"pa:ss:word #with spaces"))
    assert credentials.tokens == (f"tok-{SECRET}".encode(), b"second-token")


def test_windows_line_ends_and_a_read_only_file_are_fine(tmp_path):
    assert load_auth_file(write(tmp_path, "bearer abc\r\ncarol:pw\r\n", 0o400)).users == ((b"carol", b"pw"),)


def test_the_credentials_repr_shows_counts_and_no_secret(credentials):
    for shown in (repr(credentials), str(credentials), f"{credentials!r}"):
        assert SECRET not in shown and "alice" not in shown and "second-token" not in shown
    assert repr(credentials) == "Credentials(<2 users>, <2 bearer tokens>)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"alice:{SECRET}\n{SECRET}\n", "line 2: expected 'bearer <token>' or '<user>:<password>'"),
        (f"# c\n:{SECRET}\n", "line 2: expected 'bearer <token>' or '<user>:<password>'"),
        (f"{SECRET}:\n", "line 1: the user has an empty password"),
        ("bearer\n", "line 1: a bearer entry needs a token after 'bearer'"),
        (f"bearer {SECRET} {SECRET}\n", "line 1: a bearer token cannot hold spaces"),
        (f"alice:{SECRET}\tx\n", "line 1: holds a tab, a control character or a non-ASCII"),
        (f"alice:{SECRET}\n\nalice:{SECRET}2\n", "line 3: repeats the user of line 1"),
        (f"bearer {SECRET}\nbearer {SECRET}\n", "line 2: repeats the bearer token of line 1"),
        ("# nothing here\n\n", "no entries; add 'bearer <token>' or '<user>:<password>' lines"),
        ("", "no entries"),
    ],
)
def test_a_bad_auth_file_names_the_file_and_line_and_never_the_secret(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(AuthFileError) as raised:
        load_auth_file(path)
    assert str(path) in str(raised.value) and message in str(raised.value)
    assert SECRET not in str(raised.value)


def test_non_ascii_bytes_are_refused_without_quoting_them(tmp_path):
    path = tmp_path / "auth"
    path.write_bytes(f"# ok\nalice:{SECRET}é\n".encode())
    path.chmod(0o600)
    with pytest.raises(AuthFileError, match="line 2: holds .* non-ASCII character") as raised:
        load_auth_file(path)
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (0o644, "is readable by other users (mode 0644): chmod 600 it"),
        (0o640, "is readable by other users (mode 0640): chmod 600 it"),
        (0o604, "is readable by other users (mode 0604): chmod 600 it"),
        (0o620, "is writable by other users (mode 0620): chmod 600 it"),
    ],
)
def test_an_auth_file_other_users_may_open_is_refused(tmp_path, mode, message):
    path = write(tmp_path, f"alice:{SECRET}\n", mode)
    with pytest.raises(AuthFileError) as raised:
        load_auth_file(path)
    assert str(raised.value) == f"{path} {message}"


def test_a_missing_auth_file_is_an_auth_file_error(tmp_path):
    with pytest.raises(AuthFileError, match="cannot read the auth file"):
        load_auth_file(tmp_path / "absent")


@pytest.mark.parametrize(
    "header",
    [
        basic("alice", SECRET),
        basic("bob", "pa:ss:word #with spaces"),
        basic("alice", SECRET, "bAsIc"),
        f"Bearer tok-{SECRET}",
        "bearer second-token",
        "  BEARER   second-token  ",
    ],
)
def test_a_listed_user_or_token_is_authorized(credentials, header):
    assert authorized(credentials, header)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        basic("alice", "wrong"),
        basic("alice", SECRET + "x"),
        basic("alice", SECRET[:-1]),
        basic("mallory", SECRET),
        basic("bob", "pa"),
        basic("ALICE", SECRET),
        "Basic " + base64.b64encode(f"alice{SECRET}".encode()).decode(),
        "Basic !!!not-base64!!!",
        "Basic YWxpY2U6",
        "Basic é",
        "Basic",
        "Bearer",
        "Bearer tok",
        f"Bearer tok-{SECRET}x",
        f"Bearer tok-{SECRET}é",
        "Bearer " + basic("alice", SECRET).split()[1],
        basic("tok", SECRET),
        f"Token tok-{SECRET}",
        f"Digest username=alice, response={SECRET}",
        f"tok-{SECRET}",
    ],
)
def test_anything_else_is_refused(credentials, header):
    assert not authorized(credentials, header)


def counting(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = hmac.compare_digest

    def compare(a, b):
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", compare)
    return calls


@pytest.mark.parametrize(
    ("header", "compares", "expected"),
    [
        (basic("u0", "p0"), 6, True),
        (basic("u2", "p2"), 6, True),
        (basic("u0", "nope"), 6, False),
        (basic("nobody", "p1"), 6, False),
        ("Bearer t0", 2, True),
        ("Bearer t1", 2, True),
        ("Bearer nope", 2, False),
    ],
)
def test_every_entry_of_the_kind_is_compared_whatever_matches(monkeypatch, header, compares, expected):
    credentials = Credentials(users=((b"u0", b"p0"), (b"u1", b"p1"), (b"u2", b"p2")), tokens=(b"t0", b"t1"))
    calls = counting(monkeypatch)
    assert authorized(credentials, header) is expected
    assert len(calls) == compares


def test_the_401_has_the_security_plugins_shape():
    status, body = unauthorized_reply("/_plugins/_ml/tasks/_search")
    reason = "missing authentication credentials for REST request [/_plugins/_ml/tasks/_search]"
    cause = {"type": "security_exception", "reason": reason}
    assert (status, body) == (401, {"error": {"root_cause": [cause], **cause}, "status": 401})
    status, body = unauthorized_reply("/_plugins/_ml/tasks/_search", wrong=True)
    assert status == 401 and body["error"]["reason"] == "unable to authenticate user"
    assert body["error"]["root_cause"] == [
        {"type": "security_exception", "reason": "unable to authenticate user"}
    ]


def test_the_401_echoes_at_most_200_characters_of_the_path_and_no_query_string():
    _, body = unauthorized_reply("/" + "a" * 500)
    assert body["error"]["reason"] == f"missing authentication credentials for REST request [/{'a' * 199}]"
    _, body = unauthorized_reply(f"/_plugins/_ml/tasks?password={SECRET}")
    assert SECRET not in str(body) and body["error"]["reason"].endswith("[/_plugins/_ml/tasks]")
