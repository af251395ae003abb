"""Read one file or byte range and project each record, counting as it goes (the **read +
project** loop, no Beam).

`projected_records` is the loop both readers run: `transforms.read.SourceReader` in the
pipeline's process and `transforms.read_helper` in a helper process. It yields
`(doc_id, position, fields)` for every usable record (position: the line in a whole file, the
byte offset in a range) and a `DeadLetter` for the others, and keeps the counts in a `Tally`
the caller hands to the Beam counters (`Tally.counts`). `projected_at` reads records again, by
byte offset or line, without counting them, and yields each as it is read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from connectors.byte_ranges import FileRange, can_split
from connectors.sources import SourceAccess, SourceError, read_records
from transforms import counters
from transforms.document_ids import canonical_uri, derived_document_id
from transforms.projection import RecordError, VectorError, parse_record, project
from transforms.types import DeadLetter, Locator, ProjectedRecord, SourcePlan, dead_letter


@dataclass
class Tally:
    """Counts since the last `take`: records read, projected, with a bad vector, unmatched
    paths by field, values `--quantize` clamped by field, and the bytes of the plain JSONL lines read
    (for the progress bar)."""

    read: int = 0
    projected: int = 0
    invalid_vectors: int = 0
    unmatched: Counter[str] = field(default_factory=Counter)
    read_bytes: int = 0
    clamped: Counter[str] = field(default_factory=Counter)

    def take(self) -> Tally:
        taken = Tally(
            self.read, self.projected, self.invalid_vectors, self.unmatched, self.read_bytes, self.clamped
        )
        self.read, self.projected, self.invalid_vectors = 0, 0, 0
        self.unmatched, self.clamped, self.read_bytes = Counter(), Counter(), 0
        return taken

    def counts(self, source: int) -> dict[str, int]:
        """The tally of records read from `source[N]`, by counter name."""
        counts = {
            counters.READ: self.read,
            counters.read_by_source(source): self.read,
            counters.PROJECTED: self.projected,
            counters.INVALID_VECTORS: self.invalid_vectors,
            counters.READ_BYTES: self.read_bytes,
        }
        for name, count in self.unmatched.items():
            counts[counters.unmatched_by_field(name)] = count
        for name, count in self.clamped.items():
            counts[counters.clamped_by_field(name)] = count
        return counts


def projected_records(
    source: SourcePlan, access: SourceAccess, part: FileRange, tally: Tally
) -> Iterator[ProjectedRecord | DeadLetter]:
    """Every record of `part`, projected for `source` (or dead-lettered with its position).

    The bytes of a plain JSONL file's lines (one that could be split, `can_split`) are counted as
    they are read; other files' bytes (compressed, Parquet) are counted whole once read
    (`transforms.progress.InputBytes.finish`).

    Without an `_id` path, each record's id is derived from the file and its line
    (`transforms.document_ids`), unless the plan asks for cluster-assigned ids; such a source's
    files are never split (`pipelines.plan.split_reads`), so its positions are lines.
    """
    index, uri, by_offset = source.index, part.uri, part.by_offset
    derive_ids = source.id_path is None and not source.cluster_ids
    canonical = canonical_uri(uri, access.source_type)
    plain = can_split(uri, access.source_type)
    for position, payload in read_records(part, access):
        tally.read += 1
        if plain:
            tally.read_bytes += len(payload) + 1
        try:
            line_text = payload if isinstance(payload, bytes) else None
            doc_id, fields, unmatched = project(source, parse_record(payload), line_text, tally.clamped)
        except RecordError as error:
            if isinstance(error, VectorError):
                tally.invalid_vectors += 1
            yield dead_letter(error.stage, error.reason, Locator(index, uri, position, by_offset), payload)
            continue
        if derive_ids:
            doc_id = derived_document_id(canonical, position)
        for name in unmatched:
            tally.unmatched[name] += 1
        tally.projected += 1
        yield doc_id, position, fields


def projected_at(
    source: SourcePlan, access: SourceAccess, uri: str, positions: Collection[int], by_offset: bool
) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(position, fields)` of the records of file `uri` at `positions`, projected again (records
    the read step projected once already, so they project the same way), each as it is read: by
    byte offset on its own (`by_offset`, a file read in ranges), or in one pass by line (a file read
    whole), which stops at the last one."""
    wanted = set(positions)
    if by_offset:
        ranges = (FileRange(uri, offset, offset + 1) for offset in sorted(wanted))
        records = (record for part in ranges for record in read_records(part, access))
    else:
        records = read_records(FileRange(uri), access)
    for position, payload in records:
        if position in wanted:
            wanted.discard(position)
            line_text = payload if isinstance(payload, bytes) else None
            yield position, project(source, parse_record(payload), line_text)[1]
            if not wanted:
                break
    if wanted:
        where = "byte" if by_offset else "line"
        raise SourceError(f"{uri}: no record at {where} {min(wanted)}")
