#!/usr/bin/env bash
# The main job on the embedded default, offline: creates .venv at the repo root if missing,
# installs mlbatch (with the `local` extra) into it, starts a local OpenSearch-compatible
# server (osmem-server) on 127.0.0.1, ingests the sample OpenAI batch files in samples/
# with the ML Commons request in samples/request.json, and prints what was indexed.
# The server is stopped on exit, Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure-venv.sh local

work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

binary=$(.venv/bin/python -c 'from osmem_server import resolve_binary; print(resolve_binary())')
"$binary" -addr 127.0.0.1:0 -no-ja -no-stdin-watch -parent-pid $$ > "$work/server.out" 2> "$work/server.err" &
server_pid=$!
url=""
for _ in $(seq 1 100); do
  url=$(.venv/bin/python -c 'import json,sys
for line in open(sys.argv[1]):
    try: print(json.loads(line)["url"]); break
    except (ValueError, KeyError): pass' "$work/server.out" 2>/dev/null || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat "$work/server.err" >&2; echo "run_local: the local index server did not start" >&2; exit 1; }
echo "run_local: local OpenSearch-compatible server at $url" >&2

set +e
.venv/bin/mlbatch ingest samples/request.json --opensearch "$url" --create-index samples/index.json > "$work/task.json"
status=$?
set -e
cat "$work/task.json"
[ "$status" -eq 0 ] || exit "$status"

.venv/bin/python - "$url" <<'PY'
import sys
from opensearchpy import OpenSearch

client = OpenSearch(hosts=[sys.argv[1]])
client.indices.refresh(index="mlbatch-sample")
count = client.count(index="mlbatch-sample")["count"]
hits = client.search(index="mlbatch-sample", body={"size": 5, "sort": [{"custom_field2": "desc"}]})["hits"]["hits"]
print(f"\nindex mlbatch-sample now holds {count} documents; a few of them:")
for hit in hits:
    doc = hit["_source"]
    vectors = ", ".join(f"{k}[{len(v)}]" for k, v in doc.items() if isinstance(v, list))
    extra = f" custom_field1={doc['custom_field1']!r}" if "custom_field1" in doc else ""
    print(f"  _id={hit['_id']:<11} question={doc.get('question')!r:<16} vectors: {vectors}{extra}")
PY
