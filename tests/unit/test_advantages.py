"""The advantage registry: every estimator on hand-computed values, through the one signature."""

import math

import pytest
import torch

from training.utils.rl.advantages import ESTIMATORS, critic_free, register_advantage
from training.utils.rl.maths import shape_rewards

MASK = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.float32)


SCORES = torch.tensor([1.0, 0.0, 2.0, 4.0])


def rewards(kl_coef=0.0, logp=None):
    logp = torch.zeros(4, 4) if logp is None else logp
    return shape_rewards(SCORES, logp, torch.zeros(4, 4), MASK, kl_coef)[0]


def test_registry_drives_the_algorithm_names():
    assert critic_free() == ("grpo", "dr_grpo", "rloo", "remax", "online_dpo", "reinforce_pp", "gspo", "dapo")
    from training.utils.arguments import build_parser

    algo = build_parser(stage="rl")._option_string_actions["--algo"]
    assert tuple(algo.choices) == ("ppo", *critic_free())                  # ppo: a critic
    loss = build_parser(stage="rl")._option_string_actions["--policy_loss"]
    assert tuple(loss.choices) == ("", "clip", "dual_clip", "gspo")        # dpo: ranked pairs, online_dpo's own
    assert (ESTIMATORS["gspo"].policy_loss, ESTIMATORS["dapo"].dynamic_sampling) == ("gspo", True)
    assert ESTIMATORS["gspo"].fn is ESTIMATORS["dapo"].fn is ESTIMATORS["grpo"].fn     # GRPO's advantages
    assert ESTIMATORS["ppo"].critic and ESTIMATORS["reinforce_pp"].kl_shaped_reward and ESTIMATORS["rloo"].group
    assert ESTIMATORS["remax"].greedy_baseline and not ESTIMATORS["remax"].group
    with pytest.raises(ValueError, match="registered twice"):
        register_advantage("grpo")(lambda *a, **k: None)


def test_group_estimators_spread_the_answer_advantage_over_its_tokens():
    r = rewards()
    adv, ret = ESTIMATORS["rloo"].fn(r, MASK, group=2)
    # answer 0: 1 - 0 = 1; answer 1: -1; answer 2: 2 - 4 = -2; answer 3: 2
    assert adv.tolist() == [[0, 1, 1, 1], [0, -1, 0, 0], [0, -2, -2, 0], [0, 2, 2, 2]] and torch.equal(adv, ret)
    dr, _ = ESTIMATORS["dr_grpo"].fn(r, MASK, group=2)      # score - group mean
    assert dr[:, 1].tolist() == [0.5, -0.5, -1.0, 1.0]
    g, _ = ESTIMATORS["grpo"].fn(r, MASK, group=2)          # / group std (unbiased: 0.7071 and 1.4142)
    assert g[:, 1].tolist() == pytest.approx([0.7071, -0.7071, -0.7071, 0.7071], abs=1e-4)
    rm, _ = ESTIMATORS["remax"].fn(r, MASK, group=2, baseline=torch.tensor([0.5, 3.0]))
    assert rm[:, 1].tolist() == [0.5, -0.5, -1.0, 1.0] and rm[1, 2:].tolist() == [0, 0]


def test_reinforce_pp_returns_to_go_with_kl_then_batch_whitening():
    logp = torch.tensor([[0, 0.5, 0.5, 0.5], [0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0.25, 0.25, 0]])
    r = rewards(kl_coef=0.1, logp=logp)      # k1 KL = logp - 0 on each action token
    adv, ret = ESTIMATORS["reinforce_pp"].fn(r, MASK, gamma=1.0)
    # row 0: rewards -0.05, -0.05, -0.05 + 1 -> returns to go 0.85, 0.9, 0.95
    want = torch.tensor([[0, 0.85, 0.9, 0.95], [0, -0.1, 0, 0], [0, 2.0, 2.0, 0], [0, 3.95, 3.975, 4.0]])
    torch.testing.assert_close(ret, want)
    flat = [0.85, 0.9, 0.95, -0.1, 2.0, 2.0, 3.95, 3.975, 4.0]
    mean = sum(flat) / 9
    std = math.sqrt(sum((x - mean) ** 2 for x in flat) / 8)
    assert adv[MASK > 0].tolist() == pytest.approx([(x - mean) / std for x in flat], abs=1e-5)
    assert adv[MASK == 0].abs().max().item() == 0.0
    _, ret_half = ESTIMATORS["reinforce_pp"].fn(r, MASK, gamma=0.5)
    assert ret_half[3].tolist() == pytest.approx([0, -0.025 + 0.5 * (-0.025 + 0.5 * 4.0), -0.025 + 0.5 * 4.0, 4.0])


def test_gae_needs_values_and_matches_hand_values():
    r = rewards()
    with pytest.raises(ValueError, match="critic's values"):
        ESTIMATORS["ppo"].fn(r, MASK)
    values = torch.full((4, 4), 0.5)
    adv, ret = ESTIMATORS["ppo"].fn(r, MASK, values=values, gamma=1.0, lam=1.0)
    # lam = gamma = 1: advantage = score - value at every action of the answer
    assert adv[1, 1].item() == pytest.approx(0.0 - 0.5) and adv[3].tolist() == pytest.approx([0, 3.5, 3.5, 3.5])
    assert ret[3].tolist() == pytest.approx([0, 4.0, 4.0, 4.0])


def test_online_dpo_ranks_each_pair():
    r = rewards()                 # pairs (1, 0) and (2, 4): the first answer wins, then the second
    sign, _ = ESTIMATORS["online_dpo"].fn(r, MASK, group=2)
    assert sign.tolist() == [[0, 1, 1, 1], [0, -1, 0, 0], [0, -1, -1, 0], [0, 1, 1, 1]]
    tied = shape_rewards(torch.tensor([1.0, 1.0, 0.0, 3.0]), torch.zeros(4, 4), torch.zeros(4, 4), MASK, 0.0)[0]
    assert ESTIMATORS["online_dpo"].fn(tied, MASK, group=2)[0][:2].abs().max().item() == 0.0
    with pytest.raises(ValueError, match="must be 2"):
        ESTIMATORS["online_dpo"].fn(torch.zeros(3, 4), torch.ones(3, 4), group=3)


def test_the_algorithm_record_is_looked_up_once_with_what_follows_from_the_settings():
    from training.utils.arguments import parse_config
    from training.utils.rl.advantages import algorithm

    def algo(*flags):
        return algorithm(parse_config(list(flags), stage="rl").rl)

    ppo = algo()
    assert (ppo.name, ppo.critic, ppo.kl_in_reward, ppo.needs_reference, ppo.loss.name) == (
        "ppo",
        True,
        True,
        True,
        "clip",
    )
    dr = algo("--algo", "dr_grpo", "--num_samples_per_prompt", "4", "--loss_agg", "sequence")
    assert (dr.loss_agg, dr.std_normalize, dr.kl_in_reward) == ("constant", False, False)     # its normaliser wins
    grpo = algo("--algo", "grpo", "--num_samples_per_prompt", "4", "--kl_coef", "0", "--policy_loss", "gspo")
    assert (grpo.std_normalize, grpo.needs_reference, grpo.loss.name, grpo.loss_agg) == (True, False, "gspo", "token")
    rloo = algo("--algo", "rloo", "--num_samples_per_prompt", "2", "--kl_in_reward")
    assert rloo.kl_in_reward and not rloo.critic
    odpo = algo("--algo", "online_dpo", "--num_samples_per_prompt", "2", "--kl_coef", "0")
    assert odpo.needs_reference and odpo.loss.pairs      # the DPO loss reads the reference even without a KL term
