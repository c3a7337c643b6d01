"""Iterated RLHF: stage 3's rollouts grouped, labelled newest first within the budget, turned into pairs of
the exact tokens the reward model scored, and the reward model trained on them (its margin on the labelled
pairs rises); the refresh state survives a checkpoint; bad settings stop at parse time."""

import json

import pytest
import torch
from support.refresh import FakeLabeller

from training.utils.arguments import parse_config
from training.utils.labels.refresh import RefreshPlan, RewardRefresh, token_pairs
from training.utils.logging import read_metrics

PAD = 0


def _refresher(tiny_tok, tmp_path, steps=6, replay=None, center=0.0):
    from training.utils.distributed import init_distributed
    from training.utils.rl.models import build_reward_sources

    init_distributed()
    cfg = parse_config(["--reward_model_name_or_path", "tiny", "--reward_refresh_interval", "2",
                        "--num_samples_per_prompt", "2", "--reward_refresh_learning_rate", "3e-3",
                        "--reward_refresh_steps", str(steps), "--reward_refresh_batch", "4", "--seed", "1"], stage="rl")
    torch.manual_seed(0)
    _, models = build_reward_sources(cfg, tiny_tok, refreshes=2)
    engine = models[0]
    plan = RefreshPlan(interval=2, budget=64, steps=steps, batch=4, rule="all", center=center, last_iteration=6,
                       seed=1, pad_id=PAD)
    return RewardRefresh(engine, FakeLabeller(), plan, replay, tmp_path), engine


def _margin(engine, pairs):
    from training.utils.data.collate import PairCollator
    from training.utils.shared_prefix import answer_end_scores

    with torch.no_grad():
        c, r = answer_end_scores(engine, PairCollator(PAD)(pairs), True).chunk(2)
    return (c - r).mean().item(), (c > r).float().mean().item()


def _keep_rollouts(refresh):
    g = torch.Generator().manual_seed(0)
    for _ in range(2):                            # two rollout batches of 4 prompts x 2 answers
        seq = torch.cat([torch.randint(5, 200, (8, 4), generator=g), torch.randint(5, 200, (8, 5), generator=g)], 1)
        seq[0::2, 4:] = 7                         # the "good" answers are all token 7, the bad ones random
        attn = torch.ones_like(seq)
        prompts = [f"p{i // 2}" for i in range(8)]
        refresh.keep(prompts, ["good" if i % 2 == 0 else "bad" for i in range(8)], seq, attn, 4,
                     torch.full((8,), 8))


@pytest.mark.slow              # builds a DeepSpeed engine
def test_a_refresh_trains_the_reward_model_towards_the_labels(tiny_tok, tmp_path):
    refresh, engine = _refresher(tiny_tok, tmp_path)
    assert engine.module.training is False        # scored in eval mode between refreshes
    _keep_rollouts(refresh)
    assert refresh.due(2) and not refresh.due(3) and refresh.due(4) and not refresh.due(6)   # never after the last
    pairs = [p for grp in refresh.pending for p in token_pairs(grp, [1.0, 0.0], "all")]
    before, _ = _margin(engine, pairs)
    m = refresh(2)
    after, acc = _margin(engine, pairs)
    assert m["refresh_labels"] == 16 and m["refresh_pairs"] == 8 and refresh.pending == []
    assert after > before + 0.5 and acc == 1.0, (before, after, acc)
    assert engine.module.training is False
    rows = [json.loads(x) for x in (tmp_path / "refresh_pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(
        r["chosen"] == "good" and r["rejected"] == "bad" and r["iteration"] == 2 for r in rows
    )
    assert refresh.summary() == {"labeller": "fake", "labels": 16, "pairs": 8, "refreshes": 1, "interval": 2,
                                 "steps_per_refresh": 6}
    # the state a checkpoint keeps gives a resumed refresher the same pairs and the same next batches
    st = json.loads(json.dumps(refresh.state_dict()))
    other, _ = _refresher(tiny_tok, tmp_path / "b")
    other.load_state_dict(st)
    assert other.pairs == refresh.pairs and other.labels == 16 and other.refreshes == 1
    assert torch.equal(other._batch(2)["input_ids"], refresh._batch(2)["input_ids"])


@pytest.mark.slow              # builds a DeepSpeed engine
def test_centring_pulls_drifted_scores_back_towards_zero_and_still_ranks(tiny_tok, tmp_path):
    """Scores shifted by +2 (a hook on the head: the drift a refresh can cause): the pairwise loss alone
    cannot see a shift, so without --reward_refresh_center the level stays near 2; with it the same
    pairs and steps pull it towards 0, and the labelled pairs are still ranked right."""
    from training.utils.model.reward import head

    levels = {}
    for center in (0.0, 0.1):
        refresh, engine = _refresher(tiny_tok, tmp_path, steps=20, center=center)
        head(engine.module.model).register_forward_hook(lambda mod, inp, out: out + 2.0)
        _keep_rollouts(refresh)
        pairs = [p for grp in refresh.pending for p in token_pairs(grp, [1.0, 0.0], "all")]
        m = refresh(2)
        from training.utils.data.collate import PairCollator
        from training.utils.shared_prefix import answer_end_scores

        with torch.no_grad():
            c, r = answer_end_scores(engine, PairCollator(PAD)(pairs), True).chunk(2)
        levels[center] = abs(((c + r) / 2).mean().item())
        assert (c > r).all() and "refresh_score_level" in m
    assert levels[0.0] > 1.8 and levels[0.1] < 1.0, levels


@pytest.mark.slow              # builds a DeepSpeed engine
def test_a_refresh_with_nothing_labelled_is_skipped_and_changes_nothing(tiny_tok, tmp_path):
    refresh, engine = _refresher(tiny_tok, tmp_path)
    w = [p.detach().clone() for p in engine.module.parameters()]
    m = refresh(2)
    assert m["refresh_labels"] == 0 and "refresh_loss" not in m and refresh.refreshes == 0
    assert all(torch.equal(a, b) for a, b in zip(w, engine.module.parameters()))


@pytest.mark.slow
def test_stage3_refreshes_the_reward_model_and_saves_it(tmp_path, monkeypatch, tiny_tok):
    """PPO on tiny with a rule labeller: refreshes after iterations 2 and 4 of 5, their labels and pairs
    in the metrics, the summary and refresh_pairs.jsonl; the refreshed reward model saved and loadable,
    its weights moved from the one stage 3 started with."""
    from training.step3_rlhf_finetuning.main import main as stage3
    from training.utils.model import load_reward_model, save_hf

    (tmp_path / "refreshrule.py").write_text("def words(prompt, answer):\n    return float(len(answer.split()) % 3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rm = tmp_path / "rm"
    save_hf(load_reward_model("tiny", tiny_tok, seed=2), tiny_tok, rm)
    out = tmp_path / "ppo"
    stage3(["--actor_model_name_or_path", "tiny", "--reward_model_name_or_path", str(rm), "--output_dir", str(out),
            "--data_output_path", str(tmp_path / "cache"), "--bundled_size", "300", "--max_seq_len", "96",
            "--max_prompt_seq_len", "64", "--max_answer_seq_len", "8", "--per_device_generation_batch_size", "4",
            "--num_samples_per_prompt", "4", "--per_device_training_batch_size", "8", "--max_steps", "5",
            "--max_eval_samples", "4", "--disable_tqdm", "--plots", "false", "--seed", "3",
            "--reward_refresh_interval", "2", "--reward_refresh_labels", "8", "--labeller", "rule:refreshrule:words",
            "--reward_refresh_learning_rate", "1e-3"])
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    refreshed = [r["step"] for r in train if "refresh_labels" in r]
    assert refreshed == [2, 4] and all(r["refresh_labels"] == 8 for r in train if "refresh_labels" in r)
    summary = json.loads((out / "summary.json").read_text())["reward_refresh"]
    rows = (out / "refresh_pairs.jsonl").read_text().splitlines()
    assert summary["labels"] == 16 and summary["pairs"] == len(rows) == sum(r.get("refresh_pairs", 0) for r in train)
    assert summary["labeller"] == "rule:refreshrule:words"
    new = load_reward_model(str(out / "reward_model"), tiny_tok)
    old = load_reward_model(str(rm), tiny_tok)
    moved = [not torch.equal(a, b) for a, b in zip(new.state_dict().values(), old.state_dict().values())]
    assert summary["refreshes"] == 2 == sum("refresh_loss" in r for r in train) and sum(moved) > len(moved) // 2
