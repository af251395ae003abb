"""The two request bodies of the seed document are the ones the tests run verbatim.

`tests/seeds/` holds both `POST /_plugins/_ml/_batch_ingestion` bodies of ML Commons' batch
ingestion page (the project's seed document 003) exactly as written there, spacing included.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.plan import compile_plan
from pipelines.request import parse_request
from tests.data import OPENAI_REQUEST, SAGEMAKER_REQUEST

SEEDS = Path(__file__).resolve().parent / "seeds"
SEED_BODIES = ("batch_ingestion_sagemaker.json", "batch_ingestion_openai.json")


def seed_bodies() -> list[dict]:
    return [json.loads((SEEDS / name).read_text()) for name in SEED_BODIES]


def test_test_requests_are_the_seed_requests_verbatim():
    assert seed_bodies() == [SAGEMAKER_REQUEST, OPENAI_REQUEST]


@pytest.mark.parametrize("name", SEED_BODIES)
def test_seed_requests_compile(name: str):
    compile_plan(parse_request(json.loads((SEEDS / name).read_text())))
