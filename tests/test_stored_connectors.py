"""A `_batch_ingestion` body's `connector_id` read from the connector store, as ML Commons reads its own:
the pure resolution, and `mlbatch ingest` reading OpenAI files with a stored connector's key."""

from __future__ import annotations

import copy
import json

import pytest

from connectors.ml_store import MlStore
from connectors.secret_box import SecretBox, load_master_key
from pipelines.cli import main
from pipelines.stored_connectors import with_connector_credential
from tests.conftest import OPENAI_TEST_KEY
from tests.data import OPENAI_REQUEST, jsonl, knn_index_body, openai_batch_files


def test_the_connector_credential_replaces_the_connector_id_only_when_the_body_has_none():
    def credential_of(name):
        return {"openAI_key": f"key of {name}"}

    body = {"index_name": "i", "connector_id": "c1"}
    assert with_connector_credential(body, credential_of) == {
        "index_name": "i",
        "credential": {"openAI_key": "key of c1"},
    }
    own = {"index_name": "i", "connector_id": "c1", "credential": {"openAI_key": "mine"}}
    assert with_connector_credential(own, credential_of) is own
    for unused in ({"index_name": "i"}, {"connector_id": " "}, {"connector_id": 3}, [1]):
        assert with_connector_credential(unused, credential_of) is unused


@pytest.mark.integration
def test_mlbatch_ingest_reads_openai_files_with_a_stored_connectors_key(
    openai_files, osmem_url, mlbatch_home, tmp_path, capsys
):
    store = MlStore(SecretBox(load_master_key(mlbatch_home)))
    connector_id, _ = store.create(
        "connector", {"name": "openai", "protocol": "http"}, {"openAI_key": OPENAI_TEST_KEY}
    )
    outputs, inputs, metadata = openai_batch_files(4, 8)
    output_id, input_id, other_id = OPENAI_REQUEST["data_source"]["source"]
    openai_files.files.update({output_id: jsonl(outputs), input_id: jsonl(inputs), other_id: jsonl(metadata)})
    request = copy.deepcopy(OPENAI_REQUEST)
    del request["credential"]
    request["connector_id"] = connector_id
    (tmp_path / "request.json").write_text(json.dumps(request))
    (tmp_path / "index.json").write_text(
        json.dumps(knn_index_body(["question_embedding", "answer_embedding"], 8))
    )
    args = ["ingest", str(tmp_path / "request.json"), "--opensearch", osmem_url]

    assert main([*args, "--create-index", str(tmp_path / "index.json")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["counts"]["indexed"] == 4 and OPENAI_TEST_KEY not in json.dumps(record)

    request["connector_id"] = "unknown"
    (tmp_path / "request.json").write_text(json.dumps(request))
    assert main(args) == 2
    assert "connector_id unknown: Failed to find connector" in capsys.readouterr().err
