"""`--incremental` and `--resume TASK_ID`: run only the files not yet ingested (the **run** step, by unit).

`task_fields` checks a `--resume` (the task exists, ran incrementally, is over, and ran this
request) before the new task is created, and marks the new task's record. `plan_incremental`
reads each file's size and version, cuts the run into units (`connectors.manifest_rules`: a
file each with one source, the whole run with several) and leaves out those the index's
manifest (`connectors.manifest`) records as ingested unchanged. `IncrementalRun.run` runs the
other units one pipeline each, in order, and records each one in the manifest as soon as its
pipeline finished and did not fail, so a run killed midway keeps its finished files. Document
ids are deterministic (`--cluster-ids` is refused), so re-writing a file that was partly
written leaves the index as one uninterrupted run would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.manifest import Manifest, file_versions, manifest_path
from connectors.manifest_rules import Unit, add_counters, fingerprint, is_done, resume_chain, units_of
from connectors.opensearch.config import OpenSearchConfig
from connectors.sources import SourceAccess
from connectors.task_store import OWNED_STATES, TaskNotFound, TaskStore
from pipelines.cli_common import UsageError
from pipelines.ingest_checks import CheckedRun
from pipelines.ingest_options import IngestOptions
from pipelines.outcome import decide_outcome
from pipelines.request import IngestRequest
from transforms import counters

log = logging.getLogger("mlbatch")


def task_fields(options: IngestOptions, request: IngestRequest, store: TaskStore) -> dict[str, Any]:
    """The new task's record fields for an incremental or resumed run ({} for another run);
    raises UsageError when `--resume` names a task this run cannot resume."""
    if options.resume is None:
        return {"incremental": True} if options.incremental else {}
    problem = resume_problem(store, options.resume, request)
    if problem:
        raise UsageError(f"--resume {options.resume}: {problem}")
    return {"incremental": True, "resumed_from": options.resume}


def resume_problem(store: TaskStore, task_id: str, request: IngestRequest) -> str | None:
    """Why the run of `request` cannot resume task `task_id`, or None."""
    try:
        record = store.get(task_id)
    except TaskNotFound:
        return "no such task"
    if record.get("task_type") != "BATCH_INGEST":
        return f"the task is a {record.get('task_type')}, not an ingestion"
    if record["state"] in OWNED_STATES:
        return f"the task is still {record['state']}"
    if not record.get("incremental"):
        return "the task did not run with --incremental, so nothing records which of its files finished"
    source = {"type": request.source_type, "source": list(request.sources)}
    if record.get("index_name") != request.index_name or record.get("data_source") != source:
        return "the task ran another request (its index or data_source differ from this one's)"
    return None


@dataclass(frozen=True)
class IncrementalRun:
    """The units a run reads, those it skips, and where it records the ones it finishes."""

    manifest: Manifest
    fingerprint: str
    task_id: str
    to_run: tuple[Unit, ...]
    skipped: tuple[Unit, ...]
    shuffled: bool
    max_error_ratio: float | None

    def run(self, run_unit: Callable[[Unit], dict[str, int]]) -> dict[str, int]:
        """Run each unit with `run_unit` (its job's counters), recording it once it succeeded;
        the counters of all, summed."""
        total: dict[str, int] = {}
        for position, unit in enumerate(self.to_run, 1):
            unit_counters = run_unit(unit)
            total = add_counters(total, unit_counters)
            outcome = decide_outcome(unit_counters, len(unit.reads), self.shuffled, self.max_error_ratio)
            if outcome.state == "FAILED":
                log.warning("%s not recorded as ingested: %s", _names(unit), outcome.error)
                continue
            self.manifest.record(
                self.fingerprint, unit.files, self.task_id, counters.summarize(unit_counters)
            )
            log.info("ingested %s (%d of %d)", _names(unit), position, len(self.to_run))
        return total

    def files_to_read(
        self, files: Sequence[Sequence[tuple[str, int]]]
    ) -> tuple[tuple[tuple[str, int], ...], ...]:
        """Of each source's `(uri, size)` files, those this run reads (for the progress bar)."""
        reading = {state.key for unit in self.to_run for state in unit.files}
        return tuple(
            tuple(file for file in listed if (source, file[0]) in reading)
            for source, listed in enumerate(files)
        )

    def file_counts(self) -> dict[str, int]:
        """The task record's count of files skipped and files read."""
        return {
            "skipped_files": sum(len(unit.files) for unit in self.skipped),
            "read_files": sum(len(unit.files) for unit in self.to_run),
        }


def plan_incremental(
    options: IngestOptions,
    request: IngestRequest,
    checked: CheckedRun,
    access: SourceAccess,
    cluster: OpenSearchConfig,
    task: tuple[TaskStore, str],
) -> IncrementalRun:
    """The units of this run, split into those to run and those the manifest lets it skip.
    With `--incremental`, a unit any run recorded is skipped; with only `--resume`, one that the
    resumed task (or a task it resumed) recorded. Raises SourceError when a file cannot be read."""
    store, task_id = task
    files = [
        state
        for index, parts in enumerate(checked.reads)
        for state in file_versions(index, list(dict.fromkeys(part.uri for part in parts)), access)
    ]
    units = units_of(checked.reads, files)
    quantization = options.quantization()
    request_print = fingerprint(
        request.source_type,
        request.field_map,
        request.ingest_fields,
        options.join,
        cluster.display_url,
        quantization.scale if quantization else None,
    )
    manifest = Manifest(manifest_path(request.index_name))
    recorded = manifest.entries(request_print)
    tasks = None
    if options.resume is not None and not options.incremental:
        tasks = resume_chain(options.resume, lambda seen: _resumed_from(store, seen))
    skipped = tuple(unit for unit in units if is_done(unit, recorded, tasks))
    to_run = tuple(unit for unit in units if unit not in skipped)
    run = IncrementalRun(
        manifest,
        request_print,
        task_id,
        to_run,
        skipped,
        checked.strategy.name == "shuffle",
        options.max_error_ratio,
    )
    _log_plan(run, manifest)
    return run


def _resumed_from(store: TaskStore, task_id: str) -> str | None:
    """The task `task_id` resumed, if any (a deleted task resumed none)."""
    try:
        return store.get(task_id).get("resumed_from")
    except TaskNotFound:
        return None


def _log_plan(run: IncrementalRun, manifest: Manifest) -> None:
    counts = run.file_counts()
    total = counts["skipped_files"] + counts["read_files"]
    for unit in run.skipped:
        log.debug("skipped %s: ingested unchanged", _names(unit))
    if not run.to_run:
        log.info(
            "all %d file(s) were ingested unchanged (manifest %s): nothing new to read", total, manifest.path
        )
    elif run.skipped:
        log.info(
            "skipping %d of %d file(s), ingested unchanged (manifest %s); reading %d",
            counts["skipped_files"],
            total,
            manifest.path,
            counts["read_files"],
        )


def _names(unit: Unit) -> str:
    if len(unit.files) == 1:
        return unit.files[0].uri
    return f"the {len(unit.files)} files of the run"
