from __future__ import annotations

from transforms.merge import merge_key
from transforms.types import Locator, Projected

ORDER = ("question", "answer", "question_embedding", "custom_field1")


def rec(source: int, line: int, **fields) -> Projected:
    return Projected(Locator(source, f"file{source}", line), fields)


def test_outer_join_merges_fields_in_field_map_order():
    outcome = merge_key(
        "k",
        {0: [rec(0, 3, question_embedding=[1.0])], 1: [rec(1, 1, question="q", answer="a")], 2: []},
        3,
        ORDER,
    )
    assert list(outcome.document.fields) == ["question", "answer", "question_embedding"]
    assert outcome.document.doc_id == "k"
    assert outcome.missing_sources == (2,)
    assert outcome.document.origins == (Locator(0, "file0", 3), Locator(1, "file1", 1))


def test_inner_join_drops_incomplete_keys():
    outcome = merge_key("k", {0: [rec(0, 1, question="q")]}, 2, ORDER, join="inner")
    assert outcome.document is None and outcome.missing_sources == (1,)


def test_duplicates_resolve_to_first_by_locator():
    outcome = merge_key("k", {0: [rec(0, 9, question="late"), rec(0, 2, question="early")]}, 1, ORDER)
    assert outcome.document.fields == {"question": "early"}
    assert [d.locator.position for d in outcome.duplicates] == [9]


def test_key_with_no_records_makes_no_document():
    assert merge_key("k", {0: [], 1: []}, 2, ORDER).document is None
