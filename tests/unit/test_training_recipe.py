"""The stage-4 training additions: hard tasks, second-hop examples, the listwise loss, resuming older runs."""

from __future__ import annotations

import json
import random
from dataclasses import asdict

import pytest

from cprs_integrations.engine.prompts import HOP_SEPARATOR
from cprs_integrations.training import hard_tasks
from cprs_integrations.training.trainer import TrainConfig, _check_run_config, listwise_loss

HAYSTACK = "The grass grows. Rivers run to the sea. " * 60


def test_paraphrase_dev_questions_are_never_trained_on():
    dev_questions = {questions[-1] for _, questions, _ in hard_tasks.RELATIONS}
    rng = random.Random(0)
    for _ in range(40):
        train = hard_tasks.paraphrase_example(rng, HAYSTACK, split="train")
        dev = hard_tasks.paraphrase_example(rng, HAYSTACK, split="dev")
        assert train.query not in {q.format(p=train.meta["person"]) for q in dev_questions}
        assert dev.query in {q.format(p=dev.meta["person"]) for q in dev_questions}
        assert train.text[train.keep[0][0] : train.keep[0][1]] == train.meta["facts"][0]
        assert dev.text[dev.keep[0][0] : dev.keep[0][1]] == dev.meta["facts"][0]
        assert len(dev.meta["facts"]) == 6  # the fact, 2 people with the relation, 3 other relations
    with pytest.raises(ValueError, match="split"):
        hard_tasks.paraphrase_example(rng, HAYSTACK, split="test")


def test_dev_and_train_names_do_not_meet():
    rng = random.Random(1)
    train = {hard_tasks.person_name(rng, "train") for _ in range(300)}
    dev = {hard_tasks.person_name(rng, "dev") for _ in range(300)}
    assert not train & dev


def test_decoy_chain_keeps_the_true_chain_and_hop_queries_carry_its_head():
    rng = random.Random(2)
    plain = hard_tasks.decoy_chain_example(rng, HAYSTACK * 4)
    kept = [plain.text[s:e] for s, e in plain.keep]
    assert kept == plain.meta["chain"] and len(kept) == 5
    assert not set(kept) & set(plain.meta["decoy"])
    assert plain.meta["value"] in plain.query and plain.meta["decoy_value"] not in plain.query
    hop = hard_tasks.decoy_chain_example(rng, HAYSTACK * 4, evidence_links=3)
    question, evidence = hop.query.split(HOP_SEPARATOR)
    assert question == f"Find all variables that are assigned the value {hop.meta['value']} in the text above."
    assert hop.meta["chain"][0] in evidence  # the statement with the asked value is always there
    assert sum(link in evidence for link in hop.meta["chain"]) == 3
    assert [hop.text[s:e] for s, e in hop.keep] == hop.meta["chain"]


def test_hotpot_hop_example_keeps_every_supporting_fact():
    record = {
        "_id": "x",
        "question": "Which city is the director of Film A from?",
        "answer": "Oslo",
        "supporting_facts": [["Film A", 0], ["Ann Lee", 1]],
        "context": [
            ["Film A", ["Film A is directed by Ann Lee.", " It is long."]],
            ["Ann Lee", ["Ann Lee is a director.", " She is from Oslo."]],
            ["Other", ["Nothing here."]],
        ],
    }
    example = hard_tasks.hotpot_hop_example(record, random.Random(3), noise=0.0)
    question, evidence = example.query.split(HOP_SEPARATOR)
    assert question == record["question"]
    assert evidence in ("Film A is directed by Ann Lee.", "She is from Oslo.")
    assert sorted(example.text[s:e] for s, e in example.keep) == ["Film A is directed by Ann Lee.", "She is from Oslo."]


def test_listwise_loss_rewards_the_kept_unit_first():
    import torch

    labels = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    rows = torch.tensor([0, 0, 0, 1, 1, 2])  # window 2 has only a kept unit: no ranking to learn there
    good = listwise_loss(torch.tensor([3.0, 0.0, -1.0, 0.0, 2.0, 5.0]), labels, rows)
    bad = listwise_loss(torch.tensor([-1.0, 3.0, 0.0, 2.0, 0.0, -5.0]), labels, rows)
    assert 0 < good < bad
    expected = (
        -(torch.log_softmax(torch.tensor([3.0, 0.0, -1.0]), 0)[0] + torch.log_softmax(torch.tensor([0.0, 2.0]), 0)[1])
        / 2
    )
    assert torch.isclose(good, expected)
    assert listwise_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]), torch.tensor([0, 0])) == 0


def test_a_run_started_before_the_new_fields_still_resumes(tmp_path):
    config = TrainConfig(seed=3)
    stored = asdict(config)
    for added in ("list_loss_weight", "hard_per_epoch", "hop_share"):
        del stored[added]
    (tmp_path / "run_config.json").write_text(json.dumps(stored))
    _check_run_config(tmp_path, config, resume=True)  # the defaults are what the old run used
    with pytest.raises(ValueError, match="hop_share"):
        (tmp_path / "run_config.json").write_text(json.dumps(stored))
        _check_run_config(tmp_path, TrainConfig(seed=3, hop_share=0.3), resume=True)
