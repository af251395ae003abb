"""The write step's tally of one `_bulk` answer (pure, no Beam, no cluster)."""

from __future__ import annotations

from connectors.opensearch.bulk_retry import BulkOutcome
from transforms.bulk_body import encode_action
from transforms.bulk_tally import BulkTally, tally_bulk_outcome
from transforms.types import DeadLetter, Document, Locator


def joined(doc_id: str, *sources: int) -> Document:
    return Document(doc_id, {"x": 1}, tuple(Locator(source, f"file{source}", 1) for source in sources))


def tally_of(
    documents: list[Document], outcome: BulkOutcome, action: str, source_count: int = 1
) -> BulkTally:
    """The tally of `documents` sent as their encoded actions."""
    sent = [(document.doc_id, document.origins) for document in documents]
    actions = [encode_action(document, action) for document in documents]
    return tally_bulk_outcome(sent, actions, outcome, action, source_count)


def item(result: str, action: str = "index") -> dict:
    return {action: {"status": 201 if result == "created" else 200, "result": result}}


def test_written_documents_split_into_created_and_updated():
    documents = [joined("a", 0), joined("b", 0), joined("c", 0)]
    outcome = BulkOutcome(results=[item("created"), item("updated"), item("created")], requests=1)
    tally = tally_of(documents, outcome, "index")
    assert (tally.indexed, tally.created, tally.updated) == (3, 2, 1)
    assert tally.rejected == [] and tally.skipped_existing == 0


def test_failed_items_become_dead_letters_with_the_clusters_reason():
    documents = [joined("a", 0, 1), joined("b", 0, 1)]
    outcome = BulkOutcome(results=[item("created"), None], failures=[(1, 400, "HTTP 400 mapper_parsing")])
    tally = tally_of(documents, outcome, "index", source_count=2)
    assert tally.rejected == [
        DeadLetter("bulk", "HTTP 400 mapper_parsing", documents[1].origins, {"_id": "b", "x": 1})
    ]
    assert tally.indexed == 1 and tally.accounted_by_source == [1, 1]


def test_a_create_that_finds_its_document_is_skipped_not_rejected():
    documents = [joined("a", 0), joined("b", 0)]
    outcome = BulkOutcome(results=[None, item("created", "create")], failures=[(0, 409, "HTTP 409 conflict")])
    tally = tally_of(documents, outcome, "create")
    assert (tally.skipped_existing, tally.indexed, tally.rejected) == (1, 1, [])
    assert tally.accounted_by_source == [2]


def test_a_409_of_an_index_action_is_a_rejection():
    outcome = BulkOutcome(results=[None], failures=[(0, 409, "HTTP 409 version_conflict")])
    tally = tally_of([joined("a", 0)], outcome, "index")
    assert tally.skipped_existing == 0 and len(tally.rejected) == 1 and tally.accounted_by_source == [0]


def test_joined_documents_account_for_a_record_of_each_source():
    documents = [joined("a", 0, 1), joined("b", 0), joined("c", 1, 2)]
    outcome = BulkOutcome(results=[item("created")] * 3)
    assert tally_of(documents, outcome, "index", source_count=3).accounted_by_source == [2, 2, 1]


def test_counts_are_named_as_the_job_counters():
    documents = [joined("a", 0), joined("b", 1), joined("c", 1)]
    outcome = BulkOutcome(
        results=[item("updated"), item("created"), None],
        failures=[(2, 400, "HTTP 400 x")],
        requests=3,
        retries=2,
        splits=1,
    )
    assert tally_of(documents, outcome, "index", source_count=3).counts() == {
        "bulk_requests": 3,
        "bulk_retries": 2,
        "bulk_splits": 1,
        "skipped_existing": 0,
        "bulk_rejected": 1,
        "indexed": 2,
        "updated": 1,
        "created": 1,
        "accounted.source[0]": 1,
        "accounted.source[1]": 1,
    }


def test_a_rejected_document_is_read_back_from_its_action_with_its_vector():
    document = Document("v", {"text": "é", "embedding": b"[0.5, -1e-3]"}, (Locator(0, "f", 3),))
    outcome = BulkOutcome(results=[None], failures=[(0, 400, "HTTP 400 bad")])
    (dead,) = tally_of([document], outcome, "index").rejected
    assert dead.raw == {"_id": "v", "text": "é", "embedding": [0.5, -0.001]}
    assert dead.origins == document.origins
