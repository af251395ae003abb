"""Local stand-ins for first steps and tests, never the scaling path: a k-NN index server speaking
OpenSearch's REST API (`index_server` routes; `index_requests` reads requests, `index_store`
holds and persists the indexes, `index_query` scores searches), an OpenAI-compatible Files +
Batch embedding service (`embedding_server`) over a packaged MiniLM model (`embedder`), both on
one loopback HTTP server (`http_server`).
"""
