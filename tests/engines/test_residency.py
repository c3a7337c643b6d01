"""--offload_idle_models: models leave and come back with every parameter and optimizer-state value,
and PPO trains the same weights with and without it."""

import hashlib

import pytest
import torch

from training.utils.arguments import parse_config
from training.utils.rl.residency import Residency


def _ptrs(module):
    return [p.data_ptr() for p in module.parameters()]


@pytest.mark.slow
def test_park_and_return_keep_values_and_the_next_step_bit_identical(tiny_tok):
    from training.utils.deepspeed_setup import build_train_engine
    from training.utils.distributed import init_distributed
    from training.utils.model import ValueModel, load_reward_model

    init_distributed()
    cfg = parse_config(["--per_device_train_batch_size", "2", "--learning_rate", "1e-2"])
    x = torch.randint(10, 500, (2, 6), generator=torch.Generator().manual_seed(0))
    a = torch.ones_like(x)
    p = (a.cumsum(-1) - 1)

    def step(engine):
        engine.backward(engine(x, a, p).sum())
        engine.step()

    engines = [build_train_engine(ValueModel(load_reward_model("tiny", tiny_tok, seed=1)), cfg, 4) for _ in range(2)]
    frozen = ValueModel(load_reward_model("tiny", tiny_tok, seed=2)).eval()
    for e in engines:
        step(e)                       # optimizer state exists now
    critic, twin = engines
    res = Residency(True, torch.device("cpu"), {"critic": critic, "reward:0": frozen, "ref": None})
    assert res.how == {"critic": "copy", "reward:0": "copy"}
    before = {n: t.clone() for n, t in critic.module.state_dict().items()}
    moments = [s["exp_avg_sq"].clone() for s in critic.optimizer.state.values()]
    ptrs, fptrs = _ptrs(critic.module), _ptrs(frozen)
    res.use("reward")                                   # the critic leaves, the reward model stays
    assert res.parked == {"critic"} and _ptrs(frozen) == fptrs
    assert all(a != b for a, b in zip(_ptrs(critic.module), ptrs))            # new storage: the old one is freed
    res.use()                                           # generation: everything but the actor leaves
    assert res.parked == {"critic", "reward:0"} and all(a != b for a, b in zip(_ptrs(frozen), fptrs))
    res.use("critic")
    assert res.parked == {"reward:0"}
    for n, t in critic.module.state_dict().items():
        assert torch.equal(t, before[n]), n
    for s, m in zip(critic.optimizer.state.values(), moments):
        assert torch.equal(s["exp_avg_sq"], m)
    res.use()
    with pytest.raises(RuntimeError, match="critic was used while parked"):
        critic(x, a, p)
    res.use("critic")
    step(critic)
    step(twin)                                          # the same step on the never-parked twin
    for (n, t), u in zip(critic.module.state_dict().items(), twin.module.state_dict().values()):
        assert torch.equal(t, u), n
    assert Residency(False, torch.device("cpu"), {"critic": critic}).how == {}


def _digest(d):
    from safetensors.torch import load_file

    w = load_file(str(d / "model.safetensors"))
    return hashlib.sha256(b"".join(w[k].numpy().tobytes() for k in sorted(w))).hexdigest()


@pytest.mark.slow
def test_ppo_trains_the_same_weights_with_idle_models_offloaded(tmp_path, caplog):
    from training.step2_reward_model_finetuning.main import main as rm
    from training.step3_rlhf_finetuning.main import main as rl

    common = ["--data_output_path", str(tmp_path / "cache"), "--bundled_size", "300", "--max_seq_len", "96",
              "--max_prompt_seq_len", "64", "--max_steps", "3", "--max_eval_samples", "4", "--disable_tqdm",
              "--plots", "false", "--enable_tensorboard", "false", "--per_device_eval_batch_size", "4"]
    rm(common + ["--model_name_or_path", "tiny", "--output_dir", str(tmp_path / "rm")])
    runs = {}
    for name, extra in (("plain", []), ("offload", ["--offload_idle_models"])):
        rl(common + ["--model_name_or_path", "tiny", "--reward_model_name_or_path", str(tmp_path / "rm"),
                     "--output_dir", str(tmp_path / name), "--critic_zero_stage", "2", "--max_answer_seq_len", "6",
                     "--per_device_generation_batch_size", "4", "--ppo_epochs", "2", "--critic_learning_rate", "1e-3",
                     "--learning_rate", "1e-3", *extra])
        runs[name] = (_digest(tmp_path / name / "actor"), _digest(tmp_path / name / "critic"))
    assert runs["plain"] == runs["offload"]
    # every forward ran with its model resident (a parked model refuses one), through both ways of parking
    log = (tmp_path / "offload" / "training.log").read_text()
    assert "offload_idle_models: ref copy, critic deepspeed, reward:0 copy" in log
