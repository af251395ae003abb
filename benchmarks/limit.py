"""The limit: only orjson-parse every input line and orjson-serialize every output document.

    python -m benchmarks.limit OUTPUT.jsonl INPUT.jsonl

No Beam, no HTTP, no join: per document, two lines parsed and one document serialized —
the least CPU any ingest of these files can spend in Python.
"""

from __future__ import annotations

import sys

import orjson


def main() -> None:
    output_path, input_path = sys.argv[1:3]
    with open(input_path, "rb") as inputs:
        for line in inputs:
            orjson.loads(line)
    documents = size = 0
    with open(output_path, "rb") as outputs:
        for line in outputs:
            record = orjson.loads(line)
            document = {
                "text": record["custom_id"],
                "embedding": record["response"]["body"]["data"][0]["embedding"],
            }
            size += len(orjson.dumps(document))
            documents += 1
    print(orjson.dumps({"documents": documents, "bytes": size}).decode())


if __name__ == "__main__":
    main()
