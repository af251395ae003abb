"""Turn a finished run's counters into the task's final state (the **report** step, pure).

- Reconciliation: every record read from `source[N]` must be accounted for — indexed,
  dead-lettered, merged into a document, skipped as existing, or dropped by an inner join.
  A shortfall means the runner lost records: FAILED with "N records unaccounted for".
- For shuffle joins, the number of groups the join made must equal the number of distinct `_id`
  buckets the readers sent (counted through a shuffle of their own); more groups means a
  bucket's records, and so some key's, were split into partial documents.
- Otherwise COMPLETED, or COMPLETED_WITH_ERROR when records went to the dead-letter queue,
  turned into FAILED when the share of rejected records passes `max_error_ratio`.
"""

from __future__ import annotations

from dataclasses import dataclass

from transforms import counters as counter_names


@dataclass(frozen=True)
class Outcome:
    state: str
    error: str | None = None


def unaccounted(counters: dict[str, int], source_count: int) -> dict[str, int]:
    """`{"source[N]": missing}` for every source whose records are not all accounted for."""
    missing = {}
    for source in range(source_count):
        read = counters.get(counter_names.read_by_source(source), 0)
        gap = read - counters.get(counter_names.accounted_by_source(source), 0)
        if gap:
            missing[counter_names.source_name(source)] = gap
    return missing


def decide_outcome(
    counters: dict[str, int], source_count: int, shuffled: bool, max_error_ratio: float | None = None
) -> Outcome:
    missing = unaccounted(counters, source_count)
    if missing:
        total = sum(missing.values())
        detail = ", ".join(f"{name}: {gap}" for name, gap in missing.items())
        return Outcome(
            "FAILED", f"{total} records unaccounted for ({detail}); the runner lost or duplicated records"
        )
    distinct = counters.get(counter_names.DISTINCT_BUCKETS, 0)
    groups = counters.get(counter_names.BUCKET_GROUPS, 0)
    if shuffled and groups != distinct:
        return Outcome(
            "FAILED", f"{distinct} _id buckets were joined in {groups} groups; the runner split or lost keys"
        )
    rejected, entries = counters.get(counter_names.REJECTED_RECORDS, 0), counters.get(counter_names.DLQ, 0)
    if not entries:
        return Outcome("COMPLETED")
    read = counters.get(counter_names.READ, 0)
    ratio = rejected / read if read else 1.0
    if max_error_ratio is not None and ratio > max_error_ratio:
        return Outcome(
            "FAILED",
            f"{rejected} of {read} records rejected ({ratio:.2%}), over --max-error-ratio {max_error_ratio}",
        )
    return Outcome("COMPLETED_WITH_ERROR", f"{rejected} record(s) rejected in {entries} DLQ entries")
