"""Iterated RLHF: stage 3's rollouts grouped, labelled newest first within the budget, turned into pairs of
the exact tokens the reward model scored, and the reward model trained on them (its margin on the labelled
pairs rises); the refresh state survives a checkpoint; bad settings stop at parse time."""


import pytest
import torch
from support.refresh import FakeLabeller

from training.utils.arguments import parse_config
from training.utils.config import ConfigError
from training.utils.labels.refresh import label_groups, rollout_groups, token_pairs


def _batch():
    """2 prompts x 2 answers, left-padded prompts of width 3, answers of width 3 (end = last real token)."""
    seq = torch.tensor([[0, 11, 12, 21, 22, 0],     # prompt p1 = [11, 12]; answer [21, 22]
                        [0, 11, 12, 23, 0, 0],      # answer [23]
                        [13, 14, 15, 24, 25, 26],   # prompt p2 = [13, 14, 15]; answer [24, 25, 26]
                        [13, 14, 15, 27, 28, 0]])   # answer [27, 28]
    attn = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    end = torch.tensor([4, 3, 5, 4])
    return ["p1", "p1", "p2", "p2"], ["good a", "bad b", "bad c", "good d"], seq, attn, 3, end


def test_rollout_groups_keep_the_scored_tokens_and_label_groups_spend_newest_first():
    prompts, answers, seq, attn, width, end = _batch()
    groups = rollout_groups(prompts, answers, seq, attn, width, end)
    assert [g["prompt"] for g in groups] == ["p1", "p2"]
    assert groups[0]["prompt_ids"] == [11, 12] and groups[1]["prompt_ids"] == [13, 14, 15]
    assert groups[0]["answer_ids"] == [[21, 22], [23]] and groups[1]["answer_ids"] == [[24, 25, 26], [27, 28]]
    assert token_pairs(groups[1], [0.0, 1.0], "all") == [
        {"chosen_ids": [13, 14, 15, 27, 28], "rejected_ids": [13, 14, 15, 24, 25, 26], "prompt_len": 3}]
    assert token_pairs(groups[0], [1.0, 1.0], "all") == []          # a tie gives no pair
    lab = FakeLabeller()
    records, used = label_groups(groups, lab, budget=3, rule="all", first_row=5)
    assert used == 2 and lab.rows == [("p2", 5)]                   # the newest group only: 2 + 2 > 3
    assert records[0]["labels"] == [0.0, 1.0] and records[0]["text_pairs"] == [(1, 0)]
    records, used = label_groups(groups, FakeLabeller(), budget=4, rule="all")
    assert used == 4 and [r["prompt"] for r in records] == ["p2", "p1"]


@pytest.mark.parametrize("flags, match", [
    (["--labeller", "human:x.jsonl"], r"'human:x.jsonl' \(human:FILE\) cannot label rollouts as they come"),
    (["--reward", "model", "model:other-rm"], "exactly one reward model"),
    (["--reward", "checker"], "exactly one reward model"),
    (["--num_samples_per_prompt", "1"], "num_samples_per_prompt >= 2"),
    (["--reward_refresh_batch", "1"], "reward_refresh_batch"),
])
def test_refresh_settings_that_cannot_work_stop_at_parse_time(flags, match):
    base = ["--reward_model_name_or_path", "tiny", "--reward_refresh_interval", "2", "--num_samples_per_prompt", "4"]
    with pytest.raises(ConfigError, match=match):
        parse_config(base + flags, stage="rl")
