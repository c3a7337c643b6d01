"""Stage 3: RL on the Hybrid Engine actor with a frozen reference.

PPO (default) adds a critic (initialised from the reward model); the critic-free algorithms
(GRPO, Dr. GRPO, RLOO, ReMax, REINFORCE++, online DPO) compare several answers per prompt or
whiten over the batch. All of them run through one experience maker, one trainer and one loop
(``training/utils/rl``) and differ by their advantage estimator. Rewards come from a trained reward
model, rule functions (the bundled checker), an HTTP endpoint, or a weighted sum (``--reward``).

    python training/step3_rlhf_finetuning/main.py \\
        --actor_model_name_or_path output/actor-models/smollm2-135m \\
        --reward_model_name_or_path output/reward-models/smollm2-135m \\
        --output_dir output/step3-models/smollm2-135m
    python training/step3_rlhf_finetuning/main.py --algo grpo --reward checker --num_samples_per_prompt 4 \\
        --actor_model_name_or_path output/actor-models/smollm2-135m --output_dir output/step3-models/grpo
"""
from __future__ import annotations

import math
import sys

from training.utils.config import ConfigError
from training.utils.arguments import parse_config
from training.utils.data import PromptCollator, SFTCollator
from training.utils.distributed import all_reduce_sum, is_main, rank, world_size
from training.utils.labels.refresh import RewardRefresh
from training.utils.loop import NonFinite, make_loader
from training.utils.model import save_hf
from training.utils.model.save import write_hf
from training.utils.rl.curriculum import PromptCurriculum, loader as curriculum_loader
from training.utils.rl.experience import ExperienceMaker
from training.utils.rl.residency import Residency
from training.utils.rl.models import build_actor, build_critic, build_reference, build_reward_sources
from training.utils.rl.advantages import estimator_for
from training.utils.reward_sources import build_reward
from training.utils import faults
from training.utils.rl.runner import Counted, Faulty, RLLoop, batch_reward
from training.utils.rl.trainer import RLTrainer, cycle
from training.utils.stage import StageRun, run_cli


def eval_metric(cfg, log):
    """The evaluation's own metric: ``--eval_reward``, else the rule and HTTP sources of ``--reward``
    (each at weight 1), else None (the bundled checker on its tasks)."""
    r = cfg.rewards
    specs = r.eval_reward or [s for s in r.reward if s not in ("model",) and not s.startswith("model:")]
    if not specs:
        log.info("evaluation: the bundled checker's pass-rate on the prompts that are its tasks")
        return None
    log.info("evaluation: pass-rate = share of greedy answers that %s scores >= %g", " + ".join(specs),
             r.eval_pass_threshold)
    return build_reward(specs, timeout=r.reward_timeout)


def main(argv=None) -> dict:
    cfg = parse_config(argv, "Stage 3: RLHF with PPO or a critic-free algorithm", stage="rl")
    c, r = cfg.rl, cfg.rewards
    dschat_reward = r.reward == ["model"] and not r.reward_model_name_or_path and bool(c.critic.critic_model_name_or_path)
    if dschat_reward:       # DeepSpeed-Chat's step 3: the critic path is the reward model too
        r.reward_model_name_or_path = c.critic.critic_model_name_or_path
    if estimator_for(c.algo).critic and r.reward == ["model"] and not r.reward_model_name_or_path:
        raise ConfigError("stage 3 needs --reward_model_name_or_path (the Stage 2 output directory), "
                          "or a rule reward such as --reward checker")
    with StageRun(cfg, c.algo) as run_ctx:
        log, dev = run_ctx.log, run_ctx.device
        tok = run_ctx.tokenizer("left")
        train_ds, eval_ds, stats = run_ctx.phase_data(tok, 3)
        prompts, eval_loader = run_ctx.loaders(train_ds, eval_ds, PromptCollator(tok.pad_token_id),
                                               c.rollout.per_device_generation_batch_size, cfg.optim.per_device_eval_batch_size)
        iterations = cfg.optim.max_steps or max(1, len(prompts) // c.rollout.generation_batches) * cfg.optim.num_train_epochs
        if c.enable_test_mode:
            iterations = min(iterations, c.test_stop_step)
            log.info("test mode: stage 3 stops after %d iteration(s) (--test_stop_step)", iterations)
        if dschat_reward:
            log.info("reward model: the critic's starting model %s (DeepSpeed-Chat's --critic_model_name_or_path; "
                     "--reward_model_name_or_path names another)", c.critic.critic_model_name_or_path)
        micro = c.loss.per_device_training_batch_size
        rows = c.rollout.per_device_generation_batch_size * c.rollout.num_samples_per_prompt
        updates = iterations * c.loss.ppo_epochs * c.rollout.generation_batches * math.ceil(rows / micro)
        unsup = None
        if c.ptx.unsup_coef > 0:
            if c.ptx.unsupervised_dataset_name:
                from datasets import Dataset

                from training.utils.data.unsupervised import unsupervised_rows

                block = cfg.data.max_prompt_seq_len + cfg.data.max_answer_seq_len
                sft_ds = Dataset.from_list(unsupervised_rows(c.ptx.unsupervised_dataset_name,
                                                             c.ptx.unsupervised_dataset_config_name, tok, block,
                                                             c.ptx.preprocessing_num_workers))
                log.info("unsupervised loss (coef %g): %d blocks of %d tokens from %s", c.ptx.unsup_coef, len(sft_ds),
                         block, c.ptx.unsupervised_dataset_name)
            else:
                sft_ds, _, _ = run_ctx.phase_data(tok, 1)
            unsup = Counted(cycle(make_loader(sft_ds, micro, SFTCollator(tok.pad_token_id), True, cfg.optim.seed)))
            updates *= 2

        he = build_actor(cfg, tok, updates)
        ref = build_reference(cfg, tok)
        refreshes = (iterations - 1) // r.reward_refresh_interval if r.reward_refresh_interval else 0
        reward, reward_models = build_reward_sources(cfg, tok, refreshes)
        log.info("reward: %s", " + ".join(f"{w:g} x {n}" for w, n in zip(reward.weights, reward.names)))
        fault = faults.parse(cfg.ckpt.fault)
        if fault:
            reward = Faulty(reward, fault)
        judge = None
        if r.judge:
            from training.utils.labels.labellers import DEFAULT_JUDGE_TEMPLATE, build_labeller

            judge = build_labeller(r.judge, cfg.rm.judge_template or DEFAULT_JUDGE_TEMPLATE, r.reward_timeout)
            log.info("judge of the rollouts (logged, never a reward): %s", judge.name)
        refresh = None
        if r.reward_refresh_interval:
            refresh = RewardRefresh.from_config(cfg, tok, reward_models[0], iterations, run_ctx.out)
            log.info("iterated RLHF: every %d iterations the reward model trains on %d labels (%s) of the latest "
                     "rollouts (%d refreshes x %d steps, %d replayed stage-2 pairs)", r.reward_refresh_interval,
                     r.reward_refresh_labels, refresh.labeller.name, refreshes, r.reward_refresh_steps,
                     len(refresh.replay))
        reward_fn = batch_reward(reward, tok, judge, refresh.keep if refresh is not None else None)
        critic = build_critic(cfg, tok, updates)
        guard = NonFinite(cfg.ckpt.max_nonfinite, cfg.log.output_dir)
        resident = Residency(c.offload_idle_models, dev, {"ref": ref, "critic": critic,
                                                          **{f"reward:{i}": m for i, m in enumerate(reward_models)}})
        trainer = RLTrainer(cfg, actor=he, critic=critic, has_ref=ref is not None, guard=guard, unsup_iter=unsup,
                            residency=resident)
        maker = ExperienceMaker(cfg, actor=he, ref=ref, critic=critic, reward_fn=reward_fn, tokenizer=tok,
                                kl_coef=trainer.kl_coef, residency=resident)
        engines = {"actor": he.engine, **({"critic": critic} if critic is not None else {}),
                   **({"reward": reward_models[0]} if refresh is not None else {})}

        curriculum = None
        if c.curriculum.prompt_curriculum and "group" not in train_ds.column_names:
            log.info("prompt curriculum off: no row of the data has the --balance_key column '%s'", cfg.data.balance_key)
        elif c.curriculum.prompt_curriculum:
            curriculum = PromptCurriculum(train_ds["group"], c.rollout.per_device_generation_batch_size, cfg.optim.seed,
                                          c.curriculum.curriculum_decay, c.curriculum.curriculum_prior, c.curriculum.curriculum_floor, rank(), world_size(),
                                          all_reduce_sum)
            prompts = curriculum_loader(train_ds, curriculum, PromptCollator(tok.pad_token_id))
        loop = RLLoop(cfg, run_ctx.writer, maker=maker, trainer=trainer, reward=reward, reward_fn=reward_fn,
                      prompts=prompts, eval_loader=eval_loader, engines=engines, iterations=iterations, guard=guard,
                      device=dev, unsup=unsup, curriculum=curriculum, refresh=refresh, metric=eval_metric(cfg, log),
                      fault=fault)
        log.info("%s", loop.describe())
        first, final = loop.run()
        out = run_ctx.out
        save_hf(he.module, tok, out / "actor", cfg.ds.zero_stage)
        if critic is not None:
            save_hf(critic.module.model, tok, out / "critic", c.critic.critic_zero_stage)
        if trainer.ema is not None:
            write_hf(he.module, dict(trainer.ema.shadow) if is_main() else {}, tok, out / "actor_ema")
        extra = {}
        if refresh is not None:
            save_hf(reward_models[0].module.model, tok, out / "reward_model", r.reward_zero_stage)
            extra["reward_refresh"] = refresh.summary()
        log.info("saved actor%s%s%s under %s", " and critic" if critic is not None else "",
                 ", actor_ema" if trainer.ema is not None else "",
                 ", the refreshed reward_model" if refresh is not None else "", out)
        run_ctx.summary(iterations=iterations, algo=c.algo, first_eval=first, final_eval=final, data=stats, **extra)
        return {"first": first, "final": final}


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
