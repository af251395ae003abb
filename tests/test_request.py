from __future__ import annotations

import copy
import logging

import pytest

from pipelines.request import RequestError, parse_request
from tests.data import OPENAI_REQUEST, SAGEMAKER_REQUEST


def error_of(body) -> str:
    with pytest.raises(RequestError) as caught:
        parse_request(body)
    message = str(caught.value)
    assert "\n" not in message
    return message


def without(body: dict, *path: str) -> dict:
    body = copy.deepcopy(body)
    target = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


def test_seed_requests_parse_verbatim(monkeypatch):
    sagemaker = parse_request(SAGEMAKER_REQUEST)
    assert sagemaker.source_type == "s3" and sagemaker.index_name == "my-nlp-index"
    openai = parse_request(OPENAI_REQUEST)
    assert openai.source_type == "openAI" and len(openai.sources) == 3


def test_missing_index_name_uses_ml_commons_message():
    assert error_of(without(SAGEMAKER_REQUEST, "index_name")) == (
        "The index name for data ingestion is missing. Please provide a valid index name to proceed."
    )


def test_missing_data_source_uses_ml_commons_message():
    assert error_of(without(SAGEMAKER_REQUEST, "data_source")) == (
        "No data sources were provided for ingestion. "
        "Please specify at least one valid data source to proceed."
    )


def test_invalid_s3_uris_use_ml_commons_message():
    body = copy.deepcopy(SAGEMAKER_REQUEST)
    body["data_source"]["source"] = ["s3://ok/a", "invalid s3", "http://x/y"]
    assert error_of(body) == "The following batch ingest input S3 URIs are invalid: [invalid s3, http://x/y]"


def test_type_is_case_insensitive():
    body = copy.deepcopy(OPENAI_REQUEST)
    body["data_source"]["type"] = "OPENAI"
    assert parse_request(body).source_type == "openAI"
    body["data_source"]["type"] = "S3"
    body["data_source"]["source"] = ["s3://b/k"]
    assert parse_request(body).source_type == "s3"


def test_unknown_type_names_the_field():
    body = copy.deepcopy(SAGEMAKER_REQUEST)
    body["data_source"]["type"] = "gcs"
    assert error_of(body).startswith("data_source.type: unknown type 'gcs'")


def test_missing_type_or_source():
    assert error_of(without(SAGEMAKER_REQUEST, "data_source", "type")) == (
        "The batch ingest input data source is missing data type or source"
    )


def test_empty_s3_source_list():
    body = copy.deepcopy(SAGEMAKER_REQUEST)
    body["data_source"]["source"] = []
    assert error_of(body) == "The batch ingest input s3Uris is empty"


def test_openai_source_must_be_a_file_id():
    body = copy.deepcopy(OPENAI_REQUEST)
    body["data_source"]["source"][1] = "output.jsonl"
    assert error_of(body).startswith("data_source.source[1]: 'output.jsonl' is not an OpenAI file ID")


def test_openai_needs_a_key():
    assert error_of(without(OPENAI_REQUEST, "credential")).startswith("credential.openAI_key: missing")


def test_unknown_top_level_field_is_ignored_with_a_warning(caplog):
    body = copy.deepcopy(SAGEMAKER_REQUEST)
    body["fieldmap"] = {}
    with caplog.at_level(logging.WARNING, logger="mlbatch"):
        assert parse_request(body).index_name == "my-nlp-index"
    assert "request body: ignoring unknown field(s) 'fieldmap'" in caplog.text


def test_connector_id_without_credential_is_reported_unsupported():
    body = without(SAGEMAKER_REQUEST, "credential")
    body["connector_id"] = "abc"
    assert error_of(body).startswith("connector_id: this run cannot read the connector store")


def test_connector_id_with_credential_is_accepted():
    body = copy.deepcopy(SAGEMAKER_REQUEST)
    body["connector_id"] = "abc"
    assert parse_request(body).connector_id == "abc"


def test_nothing_to_ingest():
    body = copy.deepcopy(SAGEMAKER_REQUEST)
    body["field_map"] = {"_id": "$.id"}
    body["ingest_fields"] = []
    assert error_of(body).startswith("field_map: nothing to ingest")


def test_body_must_be_an_object():
    assert error_of([1]) == "request body: must be a JSON object"


def test_invalid_index_name_is_a_request_error():
    body = copy.deepcopy(SAGEMAKER_REQUEST)
    body["index_name"] = "Bad Index"
    assert error_of(body) == "index_name: 'Bad Index' is not a valid index name: it must be lowercase"
    body["index_name"] = "bad index"
    assert error_of(body) == "index_name: 'bad index' is not a valid index name: it must not contain ' '"
    body["index_name"] = "_hidden"
    assert error_of(body).endswith("it must not start with '_', '-' or '+'")
