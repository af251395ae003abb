"""The counts each step's pure tally hands to the Beam counters, by the names the task record reads."""

from __future__ import annotations

from collections import Counter

from transforms import counters
from transforms.dead_letters import dead_letter_counts
from transforms.record_stream import Tally
from transforms.types import DeadLetter, Locator


def test_a_read_tally_counts_per_source_and_per_unmatched_field():
    tally = Tally(read=5, projected=3, invalid_vectors=1, unmatched=Counter({"title": 2}))
    assert tally.counts(1) == {
        "read": 5,
        "read.source[1]": 5,
        "projected": 3,
        "invalid_vectors": 1,
        "unmatched.title": 2,
        "read_bytes": 0,
    }


def test_a_read_tally_names_its_source_even_with_nothing_read():
    assert Tally().counts(2)["read.source[2]"] == 0


def test_a_dead_letter_of_a_joined_document_accounts_for_a_record_of_each_source():
    origins = (Locator(0, "a", 1), Locator(2, "c", 7))
    assert dead_letter_counts(DeadLetter("bulk", "HTTP 400", origins, {})) == {
        "dlq.bulk": 1,
        "dlq": 1,
        "rejected_records": 2,
        "accounted.source[0]": 1,
        "accounted.source[2]": 1,
        "rejected.source[0]": 1,
        "rejected.source[2]": 1,
    }


def test_the_task_record_groups_per_source_and_per_stage_counters():
    counts = counters.summarize(
        {**Tally(read=4, projected=4).counts(0), "dlq.parse": 1, "accounted.source[0]": 4}
    )
    assert counts["read"] == 4 and counts["indexed"] == 0
    assert counts["read_by_source"] == counts["accounted_by_source"] == {"source[0]": 4}
    assert counts["rejected_by_stage"] == {"parse": 1} and counts["unmatched_paths"] == {}
