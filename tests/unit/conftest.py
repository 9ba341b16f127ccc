from __future__ import annotations

import pytest

from tests.unit.fakes import KeywordCritic


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from cprs_integrations.models.testing import minilm_dir

    return AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)


@pytest.fixture
def fake_critic(minilm_tokenizer) -> KeywordCritic:
    return KeywordCritic(minilm_tokenizer)


@pytest.fixture
def fake_engine(fake_critic):
    from cprs_integrations import CPRSEngine

    return CPRSEngine(fake_critic)
