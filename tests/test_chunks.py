"""Chunk lists: `LIST[].MEMBER` targets zipped into nested objects, checked, dead-lettered (pure)."""

from __future__ import annotations

import orjson
import pytest

from connectors.opensearch.mapping import KnnField, knn_vector_fields
from pipelines.plan import compile_plan, with_vector_checks
from pipelines.request import RequestError, parse_request
from transforms.chunks import ChunkError, chunk_member, mapping_path, zip_chunks
from transforms.encoded import encoded_blocks, finished_action
from transforms.projection import VectorError, project
from transforms.types import DeadLetter, Document, Locator

CHUNKED = {
    "index_name": "passages",
    "field_map": {
        "_id": ["source[0].$.custom_id", "source[1].$.custom_id"],
        "chunks[].text": "source[1].$.body.input[*]",
        "chunks[].embedding": "source[0].$.response.body.data[*].embedding",
    },
    "data_source": {"type": "local", "source": ["out.jsonl", "in.jsonl"]},
}
ORIGIN = (Locator(0, "out.jsonl", 1),)


def test_a_chunk_member_is_list_then_member_and_maps_to_the_nested_path():
    assert chunk_member("chunks[].embedding") == ("chunks", "embedding")
    assert chunk_member("chunks[]") is None and chunk_member("chunks.embedding") is None
    assert mapping_path("chunks[].embedding") == "chunks.embedding"
    assert mapping_path("title") == "title"


def test_equal_lists_zip_into_one_object_per_chunk_where_the_first_member_was():
    fields = {
        "title": "t",
        "chunks[].text": orjson.dumps(["a", "b"]),
        "chunks[].embedding": orjson.dumps([[1.0, 2.0], [3.0, 4.0]]),
        "id": 7,
    }
    zipped = zip_chunks(fields)
    assert list(zipped) == ["title", "chunks", "id"]
    assert orjson.loads(zipped["chunks"]) == [
        {"text": "a", "embedding": [1.0, 2.0]},
        {"text": "b", "embedding": [3.0, 4.0]},
    ]


def test_unequal_lists_raise_naming_every_field_and_its_length():
    fields = {"chunks[].text": orjson.dumps(["a", "b", "c"]), "chunks[].embedding": orjson.dumps([[1.0]])}
    with pytest.raises(ChunkError) as raised:
        zip_chunks(fields)
    assert str(raised.value) == (
        "chunk list 'chunks': its fields differ in length (chunks[].text has 3, chunks[].embedding has 1)"
    )


def test_a_missing_or_null_member_is_left_out_of_every_chunk():
    assert orjson.loads(
        zip_chunks({"chunks[].text": orjson.dumps(["a"]), "chunks[].embedding": None})["chunks"]
    ) == [{"text": "a"}]
    assert zip_chunks({"chunks[].embedding": None, "title": None}) == {"title": None}
    assert zip_chunks({"title": "only"}) == {"title": "only"}


def test_a_member_that_is_not_a_list_is_refused():
    with pytest.raises(ChunkError, match=r"'chunks\[\].text' is str, not a list"):
        zip_chunks({"chunks[].text": "one string"})


def test_an_unequal_document_becomes_a_map_dead_letter_and_the_others_are_encoded():
    bad = Document("d1", {"c[].a": orjson.dumps([1, 2]), "c[].b": orjson.dumps([1])}, ORIGIN)
    good = Document("d2", {"c[].a": orjson.dumps([1]), "c[].b": orjson.dumps(["x"])}, ORIGIN)
    dead = finished_action(bad, "index")
    assert isinstance(dead, DeadLetter) and dead.stage == "map" and dead.origins == ORIGIN
    assert "c[].a has 2, c[].b has 1" in dead.reason and dead.raw["_id"] == "d1"
    (block,) = [item for item in encoded_blocks([good], "index") if not isinstance(item, DeadLetter)]
    assert block.actions[0] == b'{"index":{"_id":"d2"}}\n{"c":[{"a":1,"b":"x"}]}\n'


def test_plain_names_with_brackets_keep_their_meaning_and_bad_chunk_names_are_refused():
    plain = {**CHUNKED, "field_map": {"_id": "$.id", "odd[]": "$.a", "odd[]x": "$.b"}}
    plain["data_source"] = {"type": "local", "source": ["one.jsonl"]}
    names = [spec.name for spec in compile_plan(parse_request(plain)).sources[0].fields]
    assert names == ["odd[]", "odd[]x"]
    for name, message in (
        ("[].text", r"LIST\[\]\.MEMBER"),
        ("a[].b[].c", "one level of chunk lists"),
    ):
        body = {**CHUNKED, "field_map": {**CHUNKED["field_map"], name: "source[1].$.x"}}
        with pytest.raises(RequestError, match=message):
            compile_plan(parse_request(body), chunk_lists=True)
    clash = {**CHUNKED, "field_map": {**CHUNKED["field_map"], "chunks": "source[1].$.x"}}
    with pytest.raises(RequestError, match="also the chunk list"):
        compile_plan(parse_request(clash), chunk_lists=True)


def nested_mapping(dimension: int) -> dict:
    vector = {"type": "knn_vector", "dimension": dimension}
    return {"chunks": {"type": "nested", "properties": {"text": {"type": "text"}, "embedding": vector}}}


def test_each_chunk_vector_is_checked_against_the_nested_mapping_dimension():
    plan = with_vector_checks(
        compile_plan(parse_request(CHUNKED), chunk_lists=True), knn_vector_fields(nested_mapping(2))
    )
    assert knn_vector_fields(nested_mapping(2)) == {"chunks.embedding": KnnField(2)}
    output = plan.sources[0]
    (spec,) = output.fields
    assert spec.knn_vector and spec.dimension == 2
    record = {
        "custom_id": "a",
        "response": {"body": {"data": [{"embedding": [1.0, 2.0]}, {"embedding": [3.0, 4.0]}]}},
    }
    assert project(output, record)[1] == {"chunks[].embedding": b"[[1.0,2.0],[3.0,4.0]]"}
    record["response"]["body"]["data"][1]["embedding"] = [3.0]
    with pytest.raises(VectorError, match="chunk 1: has 1 dimensions; the index mapping expects 2"):
        project(output, record)


def test_a_single_vector_given_to_a_chunk_member_is_refused_not_taken_as_a_list_of_vectors():
    plan = with_vector_checks(
        compile_plan(parse_request(CHUNKED), chunk_lists=True), knn_vector_fields(nested_mapping(2))
    )
    line = b'{"custom_id": "a", "response": {"body": {"data": [{"embedding": [1.0, 2.0]}]}}}'
    single = {**CHUNKED, "field_map": {**CHUNKED["field_map"]}}
    single["field_map"]["chunks[].embedding"] = "source[0].$.response.body.data[0].embedding"
    output = with_vector_checks(
        compile_plan(parse_request(single), chunk_lists=True), knn_vector_fields(nested_mapping(2))
    )
    with pytest.raises(VectorError, match="chunk 0: is not a list of numbers but float"):
        project(output.sources[0], orjson.loads(line), line)
    assert project(plan.sources[0], orjson.loads(line), line)[1] == {"chunks[].embedding": b"[[1.0,2.0]]"}


def test_without_chunk_lists_a_list_target_is_refused_not_read_another_way():
    """ML Commons would write `chunks[].text` as a field of an object literally named `chunks[]`:
    mlbatch reads such targets as chunk lists only when asked (`--chunk-lists`), else refuses them."""
    with pytest.raises(
        RequestError, match=r"a LIST\[\]\.MEMBER target is a chunk list only with --chunk-lists"
    ):
        compile_plan(parse_request(CHUNKED))
