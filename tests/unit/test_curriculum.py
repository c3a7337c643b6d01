"""The prompt curriculum: group weights on hand values, draws that follow them, resume, ranks, data."""

import json
from collections import Counter

import pytest
import torch

from training.utils.arguments import parse_config
from training.utils.config import ConfigError
from training.utils.rl.curriculum import PromptCurriculum, loader, prompt_spread

GROUPS = ["a"] * 6 + ["b"] * 4 + ["c"] * 2          # rows 0-5 a, 6-9 b, 10-11 c


def test_spread_per_prompt():
    s = prompt_spread(torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0]), 4)
    assert torch.allclose(s, torch.tensor([0.5, 0.0]))          # std of (1, 0, 0, 0) is 0.5 (unbiased)


def test_weights_on_hand_values():
    c = PromptCurriculum(GROUPS, 4, seed=0, decay=0.5, prior=2.0, floor=0.1)
    assert c.names == ["a", "b", "c"]
    assert torch.allclose(c.weights(), torch.full((3,), 1 / 3, dtype=torch.float64))   # nothing seen yet
    c.observe(["a", "b", "a"], torch.tensor([0.5, 0.0, 0.3]))
    # S = (0.8, 0, 0), N = (2, 1, 0); all-group mean m = 0.8 / 3; s_g = (S_g + 2m) / (N_g + 2)
    m = 0.8 / 3
    s = torch.tensor([(0.8 + 2 * m) / 4, (0 + 2 * m) / 3, m], dtype=torch.float64)
    assert torch.allclose(c.spread(), s)
    w = s + 0.1 * s.mean()
    assert torch.allclose(c.weights(), w / w.sum())
    assert float(c.spread()[1]) > 0.5 * m                  # one prompt whose answers agreed does not starve b
    c.observe(["a", "c"], torch.tensor([0.0, 0.2]))
    assert torch.allclose(c.sums, torch.tensor([0.4, 0.0, 0.2], dtype=torch.float64))      # earlier batch x 0.5
    assert torch.allclose(c.counts, torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64))
    c.observe(["b"], torch.tensor([float("nan")]))              # a skipped (non-finite) batch adds nothing
    assert torch.allclose(c.counts, torch.tensor([1.0, 0.25, 0.5], dtype=torch.float64))
    for _ in range(40):                                         # a group that always agrees sinks
        c.observe(["a", "b", "c"], torch.tensor([0.5, 0.0, 0.5]))
    # steady state: N = 2 each, S = (1, 0, 1), m = 1/3; s = (5/12, 1/6, 5/12); w = s + 0.1 x 1/3
    w = c.weights()
    assert abs(float(w[1]) - 0.2 / 1.1) < 1e-6 and abs(float(w[0]) - 0.45 / 1.1) < 1e-6
    c.sums.zero_()
    assert torch.allclose(c.weights(), torch.full((3,), 1 / 3, dtype=torch.float64))   # all agree: uniform


def test_draws_follow_the_weights_and_cover_each_group_before_repeating():
    c = PromptCurriculum(GROUPS, 8, seed=3, prior=0.0, floor=0.1)
    c.observe(["a", "b", "c"], torch.tensor([0.5, 0.0, 0.0]))
    w = c.weights()
    assert w[0] > 0.9                                      # (0.5 + 0.1 x 0.5 / 3) / (0.5 + 3 x 0.1 x 0.5 / 3)
    rows = [i for _ in range(50) for i in c.draw()]
    picks = Counter(GROUPS[i] for i in rows)
    assert abs(picks["a"] / 400 - float(w[0])) < 0.05 and picks["b"] > 0 and picks["c"] > 0
    a_rows = [i for i in rows if GROUPS[i] == "a"]
    for k in range(0, len(a_rows) - 5, 6):                 # each pass through a's 6 rows uses every row once
        assert sorted(a_rows[k:k + 6]) == list(range(6))


def test_state_round_trip_continues_the_same_draws():
    c = PromptCurriculum(GROUPS, 4, seed=1)
    c.observe(["a", "b"], torch.tensor([0.3, 0.6]))
    for _ in range(3):
        c.draw()
    st = c.state_dict()
    expect = [c.draw() for _ in range(4)]
    d = PromptCurriculum(GROUPS, 4, seed=1)
    d.load_state_dict(st)
    assert [d.draw() for _ in range(4)] == expect
    fresh = PromptCurriculum(GROUPS, 4, seed=1)
    fresh.observe(["a", "b"], torch.tensor([0.3, 0.6]))
    assert [fresh.draw() for _ in range(4)] != expect         # the restored position matters
    with pytest.raises(ValueError, match="curriculum groups"):
        PromptCurriculum(["x", "y"], 4, seed=1).load_state_dict(st)


def test_ranks_draw_the_same_groups_from_their_own_rows():
    def reduce(vals):                                        # two ranks: the other rank reports the same batch
        return [2 * v for v in vals]

    r0, r1 = (PromptCurriculum(GROUPS, 4, seed=2, rank=k, world=2, reduce=reduce) for k in (0, 1))
    for c in (r0, r1):
        c.observe(["a", "b"], torch.tensor([0.3, 0.0]))
    assert torch.allclose(r0.sums[:2], torch.tensor([0.6, 0.0], dtype=torch.float64))    # both ranks' prompts
    assert torch.allclose(r0.counts[:2], torch.tensor([2.0, 2.0], dtype=torch.float64))
    d0, d1 = [r0.draw() for _ in range(10)], [r1.draw() for _ in range(10)]
    assert [[GROUPS[i] for i in b] for b in d0] == [[GROUPS[i] for i in b] for b in d1]
    assert not {i for b in d0 for i in b} & {i for b in d1 for i in b}


def test_loader_batches_carry_groups(tmp_path, tiny_tok):
    from training.utils.data import PromptCollator, build_phase

    d = parse_config(["--data_output_path", str(tmp_path / "cache"), "--bundled_size", "600", "--max_seq_len", "96",
                      "--max_prompt_seq_len", "64", "--balance_key", "task"]).data
    train = build_phase(d, tiny_tok, 3, seed=1)[0]
    groups = train["group"]
    assert len(set(groups)) == 9
    c = PromptCurriculum(groups, 5, seed=0)
    c.observe(c.names, torch.tensor([1.0] + [0.0] * 8))                  # only the first task disagrees
    batch = next(iter(loader(train, c, PromptCollator(tiny_tok.pad_token_id))))
    assert batch["input_ids"].shape[0] == 5 and len(batch["group"]) == 5
    from training.utils.data.checker import parse_task
    assert [parse_task(t).name for t in batch["prompt_text"]] == batch["group"]      # the rows' own tasks
    plain = build_phase(
        parse_config(
            [
                "--data_output_path",
                str(tmp_path / "cache"),
                "--bundled_size",
                "600",
                "--max_seq_len",
                "96",
                "--max_prompt_seq_len",
                "64",
            ]
        ).data,
        tiny_tok,
        3,
        1,
    )[0]
    assert "group" not in plain.column_names


@pytest.mark.parametrize("extra, msg", [
    (["--num_samples_per_prompt", "4", "--algo", "grpo"], "set --balance_key"),
    (["--balance_key", "task"], "num_samples_per_prompt >= 2"),
])
def test_curriculum_needs_groups_and_several_answers(extra, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_config(["--prompt_curriculum", *extra], stage="rl")


def test_group_metrics_share_one_panel(tmp_path):
    """curriculum/<group> (and reward/<source>) rows are drawn as lines of one panel, not a panel each."""
    from PIL import Image

    from training.utils.logging import plot_metrics

    rows = [{"step": s, "split": "train", "time": 0.0, "reward": 0.1 * s, "curriculum/a": 0.5, "curriculum/b": 0.3,
             "curriculum/c": 0.2} for s in (1, 2, 3)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (png,) = plot_metrics(path, tmp_path)
    assert Image.open(png).size == (int(4.5 * 2 * 80), int(3.2 * 80))     # two panels side by side, one row


def test_a_metric_logged_once_gets_no_panel_and_a_split_of_single_points_no_image(tmp_path):
    from PIL import Image

    from training.utils.logging import plot_metrics

    rows = [{"step": s, "split": "train", "time": 0.0, "loss": 1.0 / s, **({"lr": 1e-4} if s == 3 else {})}
            for s in (1, 2, 3)] + [{"step": 3, "split": "eval", "time": 0.0, "acc": 0.9, "margin": 1.2}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (png,) = plot_metrics(path, tmp_path)                     # no eval image: each eval figure is one point
    assert png.endswith("train_curves.png") and Image.open(png).size == (int(4.5 * 80), int(3.2 * 80))  # loss only
