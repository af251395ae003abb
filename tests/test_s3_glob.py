"""S3 key globs match as a shell's do: `*` and `?` stay within one folder, `**` crosses folders;
a local glob lists each file once."""

from __future__ import annotations

import pytest

from connectors.sources import SourceAccess, expand_source, s3_glob
from tests.data import SAGEMAKER_REQUEST, jsonl, knn_index_body, sagemaker_lines
from tests.ingest_helpers import indexed_documents, run_ingest


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("out/*.jsonl", "out/a.jsonl", True),
        ("out/*.jsonl", "out/sub/a.jsonl", False),
        ("out/*", "out/sub/a.jsonl", False),
        ("out/?/a.jsonl", "out/x/a.jsonl", True),
        ("out?a.jsonl", "out/a.jsonl", False),
        ("out/[ab].jsonl", "out/b.jsonl", True),
        ("out[/]a.jsonl", "out/a.jsonl", False),
        ("out[!x]a.jsonl", "out/a.jsonl", False),
        ("out/part-[0-9].jsonl", "out/part-7.jsonl", True),
        ("out/**/*.jsonl", "out/a.jsonl", True),
        ("out/**/*.jsonl", "out/x/y/a.jsonl", True),
        ("out/**", "out/x/y/a.jsonl", True),
        ("out/[x", "out/[x", True),
        ("o.t/*", "oxt/a", False),
    ],
)
def test_s3_glob_is_a_shell_glob(pattern, key, matches):
    assert bool(s3_glob(pattern).fullmatch(key)) is matches


def test_a_local_glob_lists_each_file_once_in_order(tmp_path):
    (tmp_path / "out" / "a" / "b").mkdir(parents=True)
    for name in ("out/a/b/x.json", "out/a/y.json", "out/z.json"):
        (tmp_path / name).write_text("{}\n")
    found = expand_source(str(tmp_path / "out/**/**/*.*"), SourceAccess("local"))
    assert [uri for uri, _ in found] == [
        str(tmp_path / name) for name in ("out/a/b/x.json", "out/a/y.json", "out/z.json")
    ]


@pytest.mark.integration
def test_star_does_not_cross_folders_when_listing_and_ingesting(s3, osmem_url, capsys, tmp_path):
    lines = sagemaker_lines(6, 4)
    s3.create_bucket(Bucket="globs")
    s3.put_object(Bucket="globs", Key="out/part-0.jsonl", Body=jsonl(lines[:3]))
    s3.put_object(Bucket="globs", Key="out/old/part-1.jsonl", Body=jsonl(lines[3:]))
    access = SourceAccess("s3", SAGEMAKER_REQUEST["credential"])
    assert [uri for uri, _ in expand_source("s3://globs/out/*.jsonl", access)] == [
        "s3://globs/out/part-0.jsonl"
    ]
    assert [uri for uri, _ in expand_source("s3://globs/out/**/*.jsonl", access)] == [
        "s3://globs/out/old/part-1.jsonl",
        "s3://globs/out/part-0.jsonl",
    ]
    request = {
        **SAGEMAKER_REQUEST,
        "index_name": "glob-index",
        "data_source": {"type": "s3", "source": ["s3://globs/out/*.jsonl"]},
    }

    code, record = run_ingest(capsys, tmp_path, request, osmem_url, index_body=knn_index_body([], 4))

    assert code == 0, record
    assert set(indexed_documents(osmem_url, "glob-index")) == {"1", "2", "3"}


@pytest.mark.integration
def test_a_glob_with_a_bad_range_fails_the_task_in_one_line(s3, osmem_url, capsys, tmp_path):
    s3.create_bucket(Bucket="globs")
    request = {**SAGEMAKER_REQUEST, "data_source": {"type": "s3", "source": ["s3://globs/out/x[z-a].jsonl"]}}
    code, record = run_ingest(capsys, tmp_path, request, osmem_url, index_body=knn_index_body([], 4))
    assert code == 1 and record["state"] == "FAILED"
    assert record["error"].startswith("s3 key glob 'out/x[z-a].jsonl' is not valid: bad character range")
