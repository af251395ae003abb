"""The Beam coder of `EncodedBlock`s (between the **join** and **write** steps).

Beam estimates the size of a sample of every step's output elements, encoding each sampled
one with its coder; the default coder pickles a block, a few MB of actions, to learn its size
(a twentieth of a 50,000-document run). `EncodedBlockCoder` pickles a block only to move it
between processes, and sizes it from its actions' lengths. Steps that output blocks declare
it with `.with_output_types(EncodedBlock)`.
"""

from __future__ import annotations

import pickle

import apache_beam as beam

from transforms.encoded import EncodedBlock

_PER_DOCUMENT_BYTES = 64  # a rough size of a document's id and origins


class EncodedBlockCoder(beam.coders.Coder):
    """Pickles an `EncodedBlock`; estimates its size without encoding it."""

    def encode(self, value: EncodedBlock) -> bytes:
        return pickle.dumps(tuple(value), pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> EncodedBlock:
        return EncodedBlock(*pickle.loads(encoded))

    def estimate_size(self, value: EncodedBlock) -> int:
        return sum(map(len, value.actions)) + _PER_DOCUMENT_BYTES * len(value.actions)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type:
        return EncodedBlock


beam.coders.registry.register_coder(EncodedBlock, EncodedBlockCoder)
