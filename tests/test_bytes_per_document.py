"""The sizing measurement behind the paper plan in docs/scale-out.md runs and measures what it says."""

from __future__ import annotations

from benchmarks.bytes_per_document import FORMATS, measure


def test_bytes_per_document_follow_the_data_through_the_steps():
    seven, full = (measure(50, 384, 200, FORMATS[name]) for name in ("7 decimals", "float32 repr"))

    assert full["read_output_line"] > seven["read_output_line"] > 384 * 9
    assert seven["read_input_line"] > 200
    for sizes in (seven, full):
        assert sizes["projected_pickled_output"] < sizes["read_output_line"]  # only _id and the vector
        assert sizes["broadcast_side"] < sizes["read_input_line"]
        assert sizes["shuffle_both_sources"] > sizes["projected_pickled_output"] + 200
        assert sizes["bulk"] > sizes["projected_pickled_output"]
