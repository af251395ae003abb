"""Bytes per document at each step of a 2-source join, for sizing a cluster run (docs/scale-out.md).

    python -m benchmarks.bytes_per_document [--docs 2000] [--dim 384] [--text-bytes 1000] [--json out.json]

Writes an OpenAI batch output file (one `dim`-float embedding per line) and its batch input
(one text of `--text-bytes` bytes per line) in two float formats — 7 decimals (the ingest
benchmark's data) and the 17-significant-digit repr of a float32 (`-0.006929283495992422`,
how the OpenAI API prints embeddings) — reads them through the real read step
(`transforms.record_stream.projected_records`, vectors checked against a `knn_vector` mapping)
and reports, per document:

- `read`: the JSONL bytes of the output line and the input line;
- `projected_pickled`: one projected record `(_id, line, fields)` pickled, per source;
- `shuffle`: what the shuffle join sends through CoGroupByKey, `(bucket, (source, uri, records))`
  batches cut as `transforms.read` cuts them, encoded with Beam's coder for them
  (FastPrimitivesCoder), both sources;
- `broadcast_side`: the broadcast join's side input (the input file's pickled batches, as
  `transforms.read` emits them), which every worker holds whole;
- `bulk`: the `_bulk` action and document mlbatch sends (`transforms.bulk_body.encode_action`).
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import struct
import tempfile
from pathlib import Path
from typing import Any

from apache_beam.coders import FastPrimitivesCoder

from connectors.byte_ranges import FileRange
from connectors.opensearch.mapping import KnnField
from connectors.sources import SourceAccess
from pipelines.plan import compile_plan, with_vector_checks
from pipelines.request import parse_request
from transforms.buckets import FLUSH_RECORDS, BucketBuffer
from transforms.bulk_body import encode_action
from transforms.record_stream import Tally, projected_records
from transforms.types import Document, Locator

FORMATS = {
    "7 decimals": lambda value: round(value, 7),
    "float32 repr": lambda value: struct.unpack("f", struct.pack("f", value))[0],
}


def write_files(directory: Path, docs: int, dim: int, text_bytes: int, number: Any) -> tuple[Path, Path]:
    rng = random.Random(7)
    output, inputs = directory / "output.jsonl", directory / "input.jsonl"
    with output.open("w") as out, inputs.open("w") as into:
        for i in range(docs):
            vector = [number(rng.uniform(-0.1, 0.1)) for _ in range(dim)]
            body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": vector}]}
            response = {"status_code": 200, "request_id": f"req_{i:024d}", "body": body}
            line = {"id": f"batch_req_{i:024d}", "custom_id": f"doc-{i}", "response": response, "error": None}
            out.write(json.dumps(line) + "\n")
            text = ("lorem ipsum dolor sit amet " * (text_bytes // 27 + 1))[:text_bytes]
            request_body = {"model": "text-embedding-3-small", "input": [text]}
            line = {"custom_id": f"doc-{i}", "method": "POST", "url": "/v1/embeddings", "body": request_body}
            into.write(json.dumps(line) + "\n")
    return output, inputs


def shuffle_bytes(records: list[tuple[Any, int, dict]], source: int, uri: str) -> int:
    """Encoded bytes of the `(bucket, (source, uri, records))` elements the read step emits."""
    coder, buckets, total = FastPrimitivesCoder(), BucketBuffer(), 0
    for record in records:
        buckets.add(*record)
        if buckets.full:
            total += sum(len(coder.encode((b, (source, uri, r)))) for b, r in buckets.take().items())
    return total + sum(len(coder.encode((b, (source, uri, r)))) for b, r in buckets.take().items())


def side_input_bytes(records: list[tuple[Any, int, dict]], source: int, uri: str) -> int:
    """Encoded bytes of the side input's `(source, uri, pickled batch)` elements."""
    coder, total = FastPrimitivesCoder(), 0
    for start in range(0, len(records), FLUSH_RECORDS):
        batch = pickle.dumps(records[start : start + FLUSH_RECORDS], pickle.HIGHEST_PROTOCOL)
        total += len(coder.encode((source, uri, batch)))
    return total


def measure(docs: int, dim: int, text_bytes: int, number: Any) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        output, inputs = write_files(Path(directory), docs, dim, text_bytes, number)
        request = {
            "index_name": "sizing",
            "field_map": {
                "text": "source[1].$.body.input[0]",
                "embedding": "source[0].$.response.body.data[0].embedding",
                "_id": ["source[0].$.custom_id", "source[1].$.custom_id"],
            },
            "data_source": {"type": "local", "source": [str(output), str(inputs)]},
        }
        plan = with_vector_checks(compile_plan(parse_request(request)), {"embedding": KnnField(dim)})
        access = SourceAccess("local")
        projected = [
            list(projected_records(source, access, FileRange(source.uri), Tally())) for source in plan.sources
        ]
        uris = (str(output), str(inputs))
        texts = {doc_id: fields for doc_id, _, fields in projected[1]}
        bulk = sum(
            len(encode_action(Document(doc_id, {**texts[doc_id], **fields}, (Locator(0, uris[0], line),))))
            for doc_id, line, fields in projected[0]
        )
        per_doc = {
            "read_output_line": output.stat().st_size / docs,
            "read_input_line": inputs.stat().st_size / docs,
            "projected_pickled_output": sum(
                len(pickle.dumps(r, pickle.HIGHEST_PROTOCOL)) for r in projected[0]
            ),
            "projected_pickled_input": sum(
                len(pickle.dumps(r, pickle.HIGHEST_PROTOCOL)) for r in projected[1]
            ),
            "shuffle_both_sources": sum(shuffle_bytes(projected[n], n, uris[n]) for n in (0, 1)),
            "broadcast_side": side_input_bytes(projected[1], 1, uris[1]),
            "bulk": bulk,
        }
    return {
        name: round(value / docs if not name.startswith("read_") else value, 1)
        for name, value in per_doc.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--text-bytes", type=int, default=1000, help="bytes of text per input line")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    results = {
        name: measure(args.docs, args.dim, args.text_bytes, number) for name, number in FORMATS.items()
    }
    print(f"bytes per document, {args.docs} documents, {args.dim} floats, {args.text_bytes} bytes of text")
    names = list(next(iter(results.values())))
    print(f"| {'':24} | " + " | ".join(FORMATS) + " |")
    for name in names:
        print(f"| {name:24} | " + " | ".join(f"{results[f][name]:,.0f}" for f in FORMATS) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "bytes_per_document": results}, indent=2))


if __name__ == "__main__":
    main()
