"""The progress bar's arithmetic, the input bytes counted, and the summary table's rows (pure)."""

from __future__ import annotations

import io

from connectors.byte_ranges import FileRange
from pipelines.progress_bar import BarStatus, bar_postfix, eta_seconds, format_seconds, percent_read
from pipelines.run_summary import print_summary, run_time, source_rows, total_rows
from transforms import counters
from transforms.dead_letters import dead_letter_counts
from transforms.progress import InputBytes
from transforms.types import DeadLetter, Locator


def test_percent_is_the_share_of_input_bytes_read_capped_at_100():
    assert percent_read(250, 1000) == 25.0
    assert percent_read(1001, 1000) == 100.0
    assert percent_read(0, 0) == 100.0


def test_eta_is_the_bytes_left_at_the_rate_so_far():
    assert eta_seconds(250, 1000, 10.0) == 30.0
    assert eta_seconds(1000, 1000, 10.0) == 0.0
    assert eta_seconds(0, 1000, 10.0) is None


def test_seconds_read_as_a_clock():
    assert (format_seconds(7), format_seconds(725), format_seconds(3723)) == ("0:07", "12:05", "1:02:03")


def test_the_bar_shows_documents_per_second_eta_and_only_nonzero_troubles():
    quiet = BarStatus(read_bytes=500, total_bytes=1000, documents=4000, elapsed=2.0)
    assert bar_postfix(quiet) == "4000 docs (2000/s), ETA 0:02"
    troubled = BarStatus(500, 1000, 4000, 2.0, retries=37, dead_letters=3)
    assert bar_postfix(troubled) == "4000 docs (2000/s), ETA 0:02, 37 retries, 3 dead letters"
    assert bar_postfix(BarStatus(0, 1000, 0, 0.0)) == "0 docs (0/s), ETA ?"


def test_input_bytes_count_lines_as_read_and_compressed_files_when_finished():
    planned = InputBytes()
    planned.plan([[("/d/a.jsonl", 600), ("/d/b.jsonl.gz", 300)], [("/d/c.parquet", 100)]], "local", live=True)
    assert (planned.total, planned.files_by_source, planned.live) == (1000, (2, 1), True)
    planned.add(590)
    planned.finish(FileRange("/d/a.jsonl"))  # counted by its lines already
    assert planned.read == 590
    planned.finish(FileRange("/d/b.jsonl.gz"), FileRange("/d/c.parquet"))
    assert planned.read == 990
    planned.restart()
    assert (planned.read, planned.total) == (0, 1000)
    planned.clear()
    assert (planned.total, planned.files_by_source, planned.live) == (None, (), False)


def test_a_dead_letter_counts_its_records_per_source():
    counts = dead_letter_counts(DeadLetter("bulk", "HTTP 400", (Locator(0, "a", 1), Locator(2, "c", 7)), {}))
    assert counts[counters.rejected_by_source(0)] == counts[counters.rejected_by_source(2)] == 1
    assert counters.summarize(counts)["rejected_by_source"] == {"source[0]": 1, "source[2]": 1}


RECORD = {
    "task_id": "T1",
    "state": "COMPLETED_WITH_ERROR",
    "create_time": 1_000_000,
    "last_update_time": 1_004_250,
    "data_source": {"type": "local", "source": ["out.jsonl", "in.jsonl"]},
    "counts": {
        "indexed": 11,
        "created": 11,
        "updated": 0,
        "bulk_retries": 2,
        "dlq": 2,
        "rejected_records": 3,
        "read_by_source": {"source[0]": 12, "source[1]": 12},
        "accounted_by_source": {"source[0]": 12, "source[1]": 12},
        "rejected_by_source": {"source[0]": 2, "source[1]": 1},
        "rejected_by_stage": {"parse": 1, "validate": 1},
    },
}


def test_the_summary_has_a_row_per_source_with_files_read_matched_and_dead_letters():
    assert source_rows(RECORD, (3, 1)) == [
        ("source[0]", "3", "12", "10", "2"),
        ("source[1]", "1", "12", "11", "1"),
    ]


def test_a_source_whose_files_were_never_listed_shows_a_question_mark():
    assert source_rows(RECORD)[0][1] == "?"


def test_the_summary_totals_say_written_updated_rejected_retries_and_time():
    assert total_rows(RECORD) == [
        ("written", "11"),
        ("created / updated", "11 / 0"),
        ("rejected", "2 dead letters (3 records): parse 1, validate 1"),
        ("bulk retries", "2"),
        ("time", "4.2 s"),
        ("state", "COMPLETED_WITH_ERROR"),
    ]


def test_partial_counts_of_a_remote_run_are_said_to_be_partial():
    record = {**RECORD, "counts": {**RECORD["counts"], "partial": True}}
    assert total_rows(record)[-1][0] == "counts"


def test_run_time_reads_in_minutes_past_a_minute_and_is_unknown_without_times():
    assert run_time({"create_time": 0, "last_update_time": 187_400}) == "3 min 07 s"
    assert run_time({}) == "?"


def test_a_record_without_counts_still_prints_a_table():
    stream = io.StringIO()
    print_summary({"task_id": "T2", "state": "FAILED"}, (), stream)
    assert "T2" in stream.getvalue() and "FAILED" in stream.getvalue()


def test_the_printed_summary_holds_every_row():
    stream = io.StringIO()
    print_summary(RECORD, (3, 1), stream)
    text = stream.getvalue()
    for expected in ("records read", "dead letters", "source[1]", "written", "4.2 s", "parse 1, validate 1"):
        assert expected in text
