"""The hand-written baseline users compare against: json + a dict join + opensearch-py's helpers.bulk.

    python -m benchmarks.baseline_script OUTPUT.jsonl INPUT.jsonl URL INDEX

About forty lines, as a user would write them: load the input file into a dict by
`custom_id`, stream the output file, join, and send `index` actions with helpers.bulk.
"""

from __future__ import annotations

import json
import sys

from opensearchpy import OpenSearch, helpers


def actions(output_path: str, input_path: str, index: str):
    inputs = {}
    with open(input_path) as input_file:
        for line in input_file:
            record = json.loads(line)
            inputs[record["custom_id"]] = record["body"]["input"][0]
    with open(output_path) as output_file:
        for line in output_file:
            record = json.loads(line)
            key = record["custom_id"]
            yield {
                "_index": index,
                "_id": key,
                "_source": {
                    "text": inputs.get(key),
                    "embedding": record["response"]["body"]["data"][0]["embedding"],
                },
            }


def main() -> None:
    output_path, input_path, url, index = sys.argv[1:5]
    client = OpenSearch(hosts=[url], timeout=120)
    indexed, errors = helpers.bulk(client, actions(output_path, input_path, index), chunk_size=500)
    print(json.dumps({"indexed": indexed, "errors": len(errors) if isinstance(errors, list) else errors}))


if __name__ == "__main__":
    main()
