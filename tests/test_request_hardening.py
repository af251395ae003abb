"""Bad request bodies end as one `mlbatch: error:` line and exit 2: never a traceback, a hang,
a huge message or a silently wrong reading. Through the CLI as a user runs it, plus the pure parts."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.plan import compile_plan
from pipelines.request import EMPTY_BODY, RequestError, decode_body, parse_request
from tests.data import SAGEMAKER_REQUEST
from transforms.echo import cut, echo, label
from transforms.jsonpath import MAX_PATH_SEGMENTS, JsonPathError, compile_path

MLBATCH = Path(sys.executable).with_name("mlbatch")
TEN_MB = 10 * 1024 * 1024
MAX_ERROR_CHARS = 400


def local_body(**changes) -> dict:
    body = {
        "index_name": "my-index",
        "field_map": {"text": "source[0].$.text", "_id": ["source[0].$.id", "source[1].$.id"]},
        "data_source": {"type": "local", "source": ["a.jsonl", "b.jsonl"]},
    }
    body.update(changes)
    return body


def run_cli(tmp_path: Path, body_text: str | bytes) -> subprocess.CompletedProcess[str]:
    request = tmp_path / "request.json"
    request.write_bytes(body_text if isinstance(body_text, bytes) else body_text.encode())
    env = {**os.environ, "MLBATCH_HOME": str(tmp_path / "home")}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run(
        [str(MLBATCH), "ingest", str(request), "--opensearch", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr) < MAX_ERROR_CHARS, result.stderr[:2000]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlbatch: error: "), lines
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


BAD_BODIES = {
    "source index of 5000 digits": (
        local_body(field_map={"text": "source[" + "9" * 5000 + "].$.text", "_id": "$.id"}),
        ("field_map.text: source[999999…] is out of range",),
    ),
    "non-ASCII digit in source[N]": (
        local_body(field_map={"text": "source[\u0661].$.text", "_id": "$.id"}),
        ("field_map.text: 'source[\u0661].$.text' is not of the form 'source[N].$.path'",),
    ),
    "ingest_fields path of a million segments": (
        local_body(ingest_fields=["source[0]." + "$" + ".a" * 1_000_000]),
        ("ingest_fields[0]: ", "characters long; a JSONPath may have at most 1000"),
    ),
    "path of 101 segments": (
        local_body(ingest_fields=["source[0].$" + ".a" * 101]),
        ("ingest_fields[0]: ", f"has 101 segments; a JSONPath may have at most {MAX_PATH_SEGMENTS}"),
    ),
    "10 MB index_name": (
        local_body(index_name="A" * TEN_MB),
        ("index_name: 'AAAA", "…", "it must be at most 255 bytes"),
    ),
    "10 MB field name with a bad path": (
        local_body(field_map={"f" * TEN_MB: "nope", "_id": "$.id"}),
        ("field_map.'ffff", "…", "is not a JSONPath"),
    ),
    "10 MB path that does not parse": (
        local_body(field_map={"text": "$.a[" + "x" * TEN_MB, "_id": "$.id"}),
        ("field_map.text: '$.a[xxx", "…"),
    ),
    "10 MB OpenAI file id": (
        {
            **local_body(),
            "data_source": {"type": "openAI", "source": ["x" * TEN_MB]},
            "credential": {"openAI_key": "sk-test"},
        },
        ("data_source.source[0]: ", "characters long"),
    ),
    "10 MB data_source.type": (
        local_body(data_source={"type": "t" * TEN_MB, "source": ["a"]}),
        ("data_source.type: unknown type 'tttt", "…"),
    ),
    "many invalid S3 URIs of 1 MB": (
        local_body(data_source={"type": "s3", "source": ["x" * 1024 * 1024] * 50}),
        ("The following batch ingest input S3 URIs are invalid: [xxxx", "… 47 more]"),
    ),
    "index_name with NUL": (local_body(index_name="my\x00index"), ("index_name: 'my\\x00index'", "U+0000")),
    "index_name with a newline": (local_body(index_name="my\nindex"), ("index_name: 'my\\nindex'", "U+000A")),
    "index_name with U+2028": (
        local_body(index_name="my\u2028index"),
        ("index_name: 'my\\u2028index'", "U+2028"),
    ),
    "ingest_fields as an object": (local_body(ingest_fields={}), ("ingest_fields: must be a list",)),
    "field_map as a list": (
        local_body(field_map=[], ingest_fields=["source[0].$.id"]),
        ("field_map: must be an object", "not a list"),
    ),
    "connector_id as an object": (
        local_body(connector_id={"id": 1}, credential={"k": "v"}),
        ("connector_id: must be a non-empty string, not an object",),
    ),
    "connector_id as a number": (
        local_body(connector_id=5, credential={"k": "v"}),
        ("connector_id: must be a non-empty string, not a number",),
    ),
    "data_source.type as a list": (
        local_body(data_source={"type": ["s3"], "source": ["a"]}),
        ("data_source.type: must be a string", "not a list"),
    ),
    "empty data_source": (
        local_body(data_source={}),
        ("mlbatch: error: The batch ingest input data source cannot be null",),
    ),
    "S3 URI with a trailing newline": (
        local_body(data_source={"type": "s3", "source": ["s3://bucket/key\n"]}),
        ("The following batch ingest input S3 URIs are invalid: [s3://bucket/key ]",),
    ),
}


@pytest.mark.integration
@pytest.mark.parametrize("text", ["", " \n"])
def test_an_empty_request_file_gives_ml_commons_message(text, tmp_path):
    assert_one_error_line(run_cli(tmp_path, text), "Batch Ingestion request has empty body")


@pytest.mark.integration
@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_body_gives_one_error_line_and_exit_2(name, tmp_path):
    body, expected = BAD_BODIES[name]
    started = time.monotonic()
    assert_one_error_line(run_cli(tmp_path, json.dumps(body)), *expected)
    assert time.monotonic() - started < 30


@pytest.mark.integration
def test_unknown_top_level_field_is_ignored_with_a_warning_through_the_cli(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "1", "text": "t"}\n')
    body = {
        "index_name": "my-index",
        "field_map": {"text": "$.text", "_id": "$.id"},
        "data_source": {"type": "local", "source": ["a.jsonl"]},
        "model_id": "ignored",
    }
    result = run_cli(tmp_path, json.dumps(body))
    assert "Traceback" not in result.stderr
    assert "mlbatch: request body: ignoring unknown field(s) 'model_id'" in result.stderr
    assert "mlbatch: error:" not in result.stderr
    assert result.returncode != 2


# -- the pure parts --------------------------------------------------------------------------


def test_echo_cuts_and_keeps_one_line():
    assert echo("short") == "'short'"
    long = echo("x" * TEN_MB)
    assert len(long) == 80 and long.endswith("…") and long.startswith("'xxx")
    assert echo("a\nb\u2028c\x00") == "'a\\nb\\u2028c\\x00'"
    assert echo(10**5000) == "a large number" and echo({"a": 1}) == "an object" and echo(None) == "null"
    assert cut("line\none" + "y" * 500) == "line one" + "y" * 71 + "…"
    assert label("title") == "title" and label("a b ") == "'a b '" and label("x" * 200).endswith("…")


def test_source_index_is_ascii_digits_and_capped():
    body = local_body(field_map={"text": "source[" + "1" * 5000 + "].$.text", "_id": "$.id"})
    with pytest.raises(RequestError, match=r"source\[111111…\] is out of range"):
        compile_plan(parse_request(body))
    for digit in ("\u0661", "\uff11", "\u00b9"):
        body = local_body(field_map={"text": f"source[{digit}].$.text", "_id": "$.id"})
        with pytest.raises(RequestError, match="is not of the form 'source\\[N\\]"):
            compile_plan(parse_request(body))


def test_paths_are_capped_in_length_and_segments():
    started = time.monotonic()
    with pytest.raises(JsonPathError, match="at most 1000"):
        compile_path("$" + ".a" * 1_000_000)
    with pytest.raises(JsonPathError, match="has 101 segments"):
        compile_path("$" + ".a" * 101)
    with pytest.raises(JsonPathError, match="has 101 segments"):
        compile_path("$" + ".a" * 100 + "[*]")
    assert time.monotonic() - started < 5
    assert compile_path("$" + ".a" * 100).evaluate({}) is not None
    assert len(compile_path("$" + ".a" * 99 + "[*]").expression) < 1000


def test_jsonpath_error_messages_are_cut():
    with pytest.raises(JsonPathError) as caught:
        compile_path("$.a[" + "x" * 900)
    assert len(str(caught.value)) < 300 and "\n" not in str(caught.value)


def test_empty_body_uses_ml_commons_message():
    for raw in (b"", b"  \n\t"):
        with pytest.raises(RequestError, match=f"^{EMPTY_BODY}$"):
            decode_body(raw)
    with pytest.raises(RequestError, match="^request body: not valid JSON"):
        decode_body(b"{" + b"x" * TEN_MB)
    assert decode_body(b'{"index_name": "a"}') == {"index_name": "a"}


def test_empty_data_source_uses_ml_commons_message():
    body = copy.deepcopy(SAGEMAKER_REQUEST)
    body["data_source"] = {}
    with pytest.raises(RequestError, match="^The batch ingest input data source cannot be null$"):
        parse_request(body)


def test_unknown_data_source_field_is_ignored_with_a_warning(caplog):
    body = copy.deepcopy(SAGEMAKER_REQUEST)
    body["data_source"]["format"] = "jsonl"
    with caplog.at_level(logging.WARNING, logger="mlbatch"):
        assert parse_request(body).source_type == "s3"
    assert "data_source: ignoring unknown field(s) 'format'" in caplog.text


def test_wrong_types_are_refused_naming_the_field():
    cases = {
        "ingest_fields": ({}, "ingest_fields: must be a list of non-empty strings"),
        "field_map": ("", "field_map: must be an object of field name -> JSONPath, not a string"),
        "connector_id": (["a"], "connector_id: must be a non-empty string, not a list"),
    }
    for name, (value, message) in cases.items():
        body = copy.deepcopy(SAGEMAKER_REQUEST)
        body[name] = value
        with pytest.raises(RequestError) as caught:
            parse_request(body)
        assert str(caught.value) == message


def test_sizes_are_capped():
    body = copy.deepcopy(SAGEMAKER_REQUEST)
    body["field_map"] = {f"f{n}": "$.a" for n in range(1001)}
    with pytest.raises(RequestError, match="at most 1000 together"):
        parse_request(body)
    body = copy.deepcopy(SAGEMAKER_REQUEST)
    body["data_source"]["source"] = ["s3://b/k"] * 1001
    with pytest.raises(RequestError, match="data_source.source: has 1001 entries; at most 1000"):
        parse_request(body)
    body = local_body(field_map={"text": "$.t", "_id": ["$.id"] * 1001})
    with pytest.raises(RequestError, match="field_map._id: has 1001 paths"):
        compile_plan(parse_request(body))
