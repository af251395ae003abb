"""The ML object store: connector and model records in SQLite, credentials sealed, never in plain text."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from connectors.ml_store import MlStore, ObjectInUse, ObjectNotFound
from connectors.secret_box import SecretBox, SecretBoxError

SECRET = "sk-plaintext-0123456789-do-not-store"
CONNECTOR = {
    "name": "OpenAI embeddings",
    "protocol": "http",
    "parameters": {"model": "text-embedding-ada-002"},
    "actions": [{"action_type": "predict", "method": "POST", "url": "https://api.openai.com/v1/embeddings"}],
}


@pytest.fixture
def store() -> MlStore:
    return MlStore(SecretBox(Fernet.generate_key()))


def stored_bytes(directory: Path) -> bytes:
    """Everything SQLite wrote: the database and any journal or write-ahead log beside it."""
    return b"".join(path.read_bytes() for path in sorted(directory.glob("ml.db*")))


def test_store_lives_under_mlbatch_home(store: MlStore, mlbatch_home: Path) -> None:
    assert store.path == mlbatch_home / "ml.db"
    assert store.path.exists()


def test_create_stamps_the_record_and_get_answers_it(store: MlStore) -> None:
    connector_id, record = store.create("connector", CONNECTOR, credential={"openAI_key": SECRET})
    assert len(connector_id) == 20
    assert record == {
        **CONNECTOR,
        "created_time": record["created_time"],
        "last_updated_time": record["created_time"],
    }
    assert store.get("connector", connector_id) == record


def test_credential_round_trips_and_never_comes_with_the_record(store: MlStore) -> None:
    connector_id, record = store.create("connector", CONNECTOR, credential={"openAI_key": SECRET})
    assert "credential" not in record
    assert SECRET not in str(store.get("connector", connector_id))
    assert store.credential("connector", connector_id) == {"openAI_key": SECRET}


def test_database_file_never_holds_the_plaintext_secret(store: MlStore, mlbatch_home: Path) -> None:
    connector_id, _ = store.create("connector", CONNECTOR, credential={"openAI_key": SECRET})
    raw = stored_bytes(mlbatch_home)
    assert b"OpenAI embeddings" in raw  # the test reads the file the store writes
    assert SECRET.encode() not in raw
    store.update("connector", connector_id, credential={"openAI_key": SECRET + "-rotated"}, name="renamed")
    assert store.credential("connector", connector_id) == {"openAI_key": SECRET + "-rotated"}
    raw = stored_bytes(mlbatch_home)
    assert b"renamed" in raw
    assert SECRET.encode() not in raw


def test_record_carrying_a_credential_is_refused(store: MlStore, mlbatch_home: Path) -> None:
    with pytest.raises(ValueError, match="credential="):
        store.create("connector", {**CONNECTOR, "credential": {"openAI_key": SECRET}})
    assert SECRET.encode() not in stored_bytes(mlbatch_home)


def test_object_without_credential_has_an_empty_one(store: MlStore) -> None:
    connector_id, _ = store.create("connector", CONNECTOR)
    assert store.credential("connector", connector_id) == {}


def test_another_master_key_cannot_open_the_credential(store: MlStore) -> None:
    connector_id, _ = store.create("connector", CONNECTOR, credential={"openAI_key": SECRET})
    other = MlStore(SecretBox(Fernet.generate_key()), store.path)
    assert other.get("connector", connector_id)["name"] == CONNECTOR["name"]
    with pytest.raises(SecretBoxError, match="master key is not the one it was stored with"):
        other.credential("connector", connector_id)


def test_unknown_ids_are_not_found(store: MlStore) -> None:
    connector_id, _ = store.create("connector", CONNECTOR)
    message = "Failed to find model with the provided model id: nope"
    for call in (store.get, store.credential, store.update, store.delete):
        with pytest.raises(ObjectNotFound, match=message):
            call("model", "nope")
    with pytest.raises(ObjectNotFound):
        store.get("model", connector_id)  # the id of an object of another kind


def test_update_sets_fields_and_keeps_the_credential(store: MlStore) -> None:
    connector_id, created = store.create("connector", CONNECTOR, credential={"openAI_key": SECRET})
    updated = store.update("connector", connector_id, description="embeddings", kind="remote")
    assert updated["description"] == "embeddings"
    assert updated["kind"] == "remote"
    assert updated["created_time"] == created["created_time"]
    assert updated["last_updated_time"] >= created["last_updated_time"]
    assert store.get("connector", connector_id) == updated
    assert store.credential("connector", connector_id) == {"openAI_key": SECRET}


def test_a_model_cannot_name_a_missing_connector(store: MlStore) -> None:
    with pytest.raises(ObjectNotFound, match="Failed to find connector with the provided connector id: gone"):
        store.create("model", {"name": "m", "connector_id": "gone"})
    model_id, _ = store.create("model", {"name": "inline", "connector": {"name": "c"}})
    with pytest.raises(ObjectNotFound, match="gone"):
        store.update("model", model_id, connector_id="gone")


def test_delete_removes_and_refuses_a_connector_in_use(store: MlStore) -> None:
    connector_id, _ = store.create("connector", CONNECTOR, credential={"openAI_key": SECRET})
    model_id, _ = store.create("model", {"name": "m", "connector_id": connector_id})
    with pytest.raises(ObjectInUse) as raised:
        store.delete("connector", connector_id)
    assert str(raised.value) == (
        f"1 models are still using this connector, please delete or update the models first: [{model_id}]"
    )
    assert raised.value.users == [model_id]
    assert store.get("connector", connector_id)["name"] == CONNECTOR["name"]
    store.delete("model", model_id)
    store.delete("connector", connector_id)
    with pytest.raises(ObjectNotFound):
        store.get("connector", connector_id)
    with pytest.raises(ObjectNotFound):
        store.credential("connector", connector_id)


def test_unknown_kind_is_refused(store: MlStore) -> None:
    with pytest.raises(ValueError, match="unknown kind 'agent'"):
        store.create("agent", {"name": "x"})


def test_threads_share_one_store(store: MlStore) -> None:
    connector_id, _ = store.create("connector", CONNECTOR, credential={"openAI_key": SECRET})

    def register(number: int) -> str:
        model_id, _ = store.create("model", {"name": f"m{number}", "connector_id": connector_id})
        store.update("model", model_id, model_state="DEPLOYED")
        assert store.credential("connector", connector_id) == {"openAI_key": SECRET}
        return model_id

    with ThreadPoolExecutor(8) as pool:
        model_ids = [future.result(timeout=60) for future in [pool.submit(register, n) for n in range(40)]]
    assert len(set(model_ids)) == 40
    assert {store.get("model", model_id)["model_state"] for model_id in model_ids} == {"DEPLOYED"}
