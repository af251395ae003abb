"""The two request bodies of the seed document are the ones the tests run verbatim."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipelines.plan import compile_plan
from pipelines.request import parse_request
from tests.data import OPENAI_REQUEST, SAGEMAKER_REQUEST

SEED = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "003_9256446cc9095370.txt"


def seed_bodies() -> list[dict]:
    text = SEED.read_text()
    blocks = re.findall(r"POST /_plugins/_ml/_batch_ingestion\n(\{.*?\n\})\n", text, re.DOTALL)
    return [json.loads(block) for block in blocks]


@pytest.mark.skipif(not SEED.exists(), reason="../shared/seeds is not beside this checkout")
def test_test_requests_are_the_seed_requests_verbatim():
    assert seed_bodies() == [SAGEMAKER_REQUEST, OPENAI_REQUEST]


@pytest.mark.skipif(not SEED.exists(), reason="../shared/seeds is not beside this checkout")
def test_seed_requests_compile():
    for body in seed_bodies():
        compile_plan(parse_request(body))
