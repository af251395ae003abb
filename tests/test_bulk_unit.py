from __future__ import annotations

import orjson

from transforms.bulk import BulkBuffer, encode_index_action, item_failure
from transforms.types import Document


def doc(doc_id, **fields) -> Document:
    return Document(doc_id, fields, ())


def test_index_action_carries_the_id_and_the_document_once():
    encoded = encode_index_action(doc('a"b', x=[1.5, 2.0]))
    action, source, tail = encoded.split(b"\n")
    assert orjson.loads(action) == {"index": {"_id": 'a"b'}}
    assert orjson.loads(source) == {"x": [1.5, 2.0]}
    assert tail == b""


def test_auto_id_action_has_no_id():
    assert encode_index_action(doc(None, x=1)).startswith(b'{"index":{}}\n')


def fill(buffer: BulkBuffer, documents: list[Document]) -> list[int]:
    sizes = []
    for document in documents:
        encoded = encode_index_action(document)
        if buffer.would_overflow(encoded):
            sizes.append(len(buffer.take()[1]))
        buffer.add(document, encoded)
        if buffer.full:
            sizes.append(len(buffer.take()[1]))
    if len(buffer):
        sizes.append(len(buffer.take()[1]))
    return sizes


def test_bodies_are_cut_by_document_count():
    assert fill(BulkBuffer(max_docs=3), [doc(str(i), x=i) for i in range(7)]) == [3, 3, 1]


def test_bodies_are_cut_by_bytes_before_overflowing():
    documents = [doc(str(i), text="x" * 100) for i in range(5)]
    one = len(encode_index_action(documents[0]))
    assert fill(BulkBuffer(max_docs=100, max_bytes=2 * one + 10), documents) == [2, 2, 1]


def test_a_document_bigger_than_the_byte_limit_goes_alone():
    assert fill(BulkBuffer(max_docs=100, max_bytes=10), [doc("1", text="x" * 50), doc("2", y=1)]) == [1, 1]


def test_item_failure_reports_type_reason_and_cause():
    ok = {"index": {"_id": "1", "status": 201, "result": "created"}}
    bad = {
        "index": {
            "_id": "2",
            "status": 400,
            "error": {
                "type": "mapper_parsing_exception",
                "reason": "failed to parse field [v]",
                "caused_by": {"type": "illegal_argument_exception", "reason": "Vector dimension mismatch"},
            },
        }
    }
    assert item_failure(ok) is None
    assert item_failure(bad) == (
        "HTTP 400 mapper_parsing_exception: failed to parse field [v] "
        "(caused by illegal_argument_exception: Vector dimension mismatch)"
    )
