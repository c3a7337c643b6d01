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

from training.utils import faults
from training.utils.arguments import parse_config
from training.utils.config import ConfigError, RewardSourcesConfig
from training.utils.data import PromptCollator
from training.utils.distributed import is_main
from training.utils.labels.refresh import from_config as refresh_from_config
from training.utils.loop import NonFinite
from training.utils.model import save_hf
from training.utils.model.save import write_hf
from training.utils.reward_sources import eval_metric
from training.utils.rl.advantages import algorithm
from training.utils.rl.curriculum import from_config as curriculum_from_config
from training.utils.rl.experience import ExperienceMaker
from training.utils.rl.hooks import CurriculumPrompts, Fault, KLCoef, PtxBatches, Refresh, ShuffledPrompts, optional
from training.utils.rl.models import build_models
from training.utils.rl.multiturn import rollout_from_config
from training.utils.rl.rollout import rollout_engine
from training.utils.rl.residency import Residency
from training.utils.rl.runner import Evaluation, RLLoop, batch_reward, rollout_judge
from training.utils.rl.trainer import RLTrainer, cycle, ptx_batches
from training.utils.stage import StageRun, run_cli


def main(argv=None) -> dict:
    cfg = parse_config(argv, "Stage 3: RLHF with PPO or a critic-free algorithm", stage="rl")
    c, r = cfg.rl, cfg.rewards
    default_reward = r.reward == RewardSourcesConfig().reward       # --reward left at its default: the reward model
    dschat_reward = default_reward and not r.reward_model_name_or_path and bool(c.critic.critic_model_name_or_path)
    if dschat_reward:       # DeepSpeed-Chat's step 3: the critic path is the reward model too
        r.reward_model_name_or_path = c.critic.critic_model_name_or_path
    algo = algorithm(c)         # the algorithm's record, looked up once for every part below
    if algo.critic and default_reward and not r.reward_model_name_or_path:
        raise ConfigError("stage 3 needs --reward_model_name_or_path (the Stage 2 output directory), "
                          "or a rule reward such as --reward checker")
    with StageRun(cfg, c.algo) as run_ctx:
        log, dev = run_ctx.log, run_ctx.device
        tok = run_ctx.tokenizer("left")
        train_ds, eval_ds, stats = run_ctx.phase_data(tok, 3)
        prompts, eval_loader = run_ctx.loaders(train_ds, eval_ds, PromptCollator(tok.pad_token_id),
                                               c.rollout.per_device_generation_batch_size,
                                               cfg.optim.per_device_eval_batch_size)
        iterations = cfg.optim.max_steps or \
            max(1, len(prompts) // c.rollout.generation_batches) * cfg.optim.num_train_epochs
        if c.enable_test_mode:
            iterations = min(iterations, c.test_stop_step)
            log.info("test mode: stage 3 stops after %d iteration(s) (--test_stop_step)", iterations)
        if dschat_reward:
            log.info("reward model: the critic's starting model %s (DeepSpeed-Chat's --critic_model_name_or_path; "
                     "--reward_model_name_or_path names another)", c.critic.critic_model_name_or_path)
        rows = c.rollout.per_device_generation_batch_size * c.rollout.num_samples_per_prompt
        micro = c.loss.per_device_training_batch_size
        updates = iterations * c.loss.ppo_epochs * c.rollout.generation_batches * math.ceil(rows / micro)
        unsup = ptx_batches(cfg, run_ctx.phase_data, tok, log)
        updates *= 2 if unsup is not None else 1

        refreshes = (iterations - 1) // r.reward_refresh_interval if r.reward_refresh_interval else 0
        models = build_models(cfg, tok, algo, updates, refreshes)
        reward = models.reward
        log.info("reward: %s", " + ".join(f"{w:g} x {n}" for w, n in zip(reward.weights, reward.names)))
        fault = faults.parse(cfg.ckpt.fault)
        if fault:
            reward = faults.Faulty(reward, fault)
        refresh = refresh_from_config(cfg, tok, models.reward_models[0] if models.reward_models else None, iterations,
                                      refreshes, run_ctx.out)
        reward_fn = batch_reward(reward, tok, rollout_judge(cfg), refresh.keep if refresh is not None else None)
        resident = Residency(c.offload_idle_models, dev, {
            "ref": models.reference, "critic": models.critic,
            **{f"reward:{i}": m for i, m in enumerate(models.reward_models)}})
        kl = KLCoef(c.kl, c.rollout.generation_batches * rows)
        trainer = RLTrainer(cfg, algorithm=algo, models=models, kl=kl, residency=resident, unsup_iter=unsup,
                            guard=NonFinite(cfg.ckpt.max_nonfinite, cfg.log.output_dir))
        maker = ExperienceMaker(cfg, algorithm=algo, models=models, reward_fn=reward_fn, tokenizer=tok, kl=kl,
                                residency=resident,
                                rollout=rollout_from_config(cfg.tools, rollout_engine(cfg, models.actor, tok), tok))
        curriculum, curriculum_prompts = curriculum_from_config(cfg, train_ds, PromptCollator(tok.pad_token_id), log)
        source = ShuffledPrompts(cycle(prompts), c.rollout.generation_batches) if curriculum is None else \
            CurriculumPrompts(curriculum, cycle(curriculum_prompts), c.rollout.generation_batches)
        hooks = [source, kl, *optional(
            PtxBatches(unsup) if unsup is not None else None,
            Refresh(refresh, models.reward_models[0], resident) if refresh is not None else None,
            Fault(reward) if fault else None)]
        evaluation = Evaluation(eval_loader, eval_metric(r, log), r.eval_pass_threshold, cfg.data.max_answer_seq_len)
        loop = RLLoop(cfg, run_ctx.writer, maker=maker, trainer=trainer, hooks=hooks, evaluation=evaluation,
                      iterations=iterations)
        log.info("%s", loop.describe())
        first, final = loop.run()

        out, he, critic = run_ctx.out, models.actor, models.critic
        save_hf(he.module, tok, out / "actor", cfg.ds.zero_stage)
        if critic is not None:
            save_hf(critic.module.model, tok, out / "critic", c.critic.critic_zero_stage)
        if trainer.ema is not None:
            write_hf(he.module, dict(trainer.ema.shadow) if is_main() else {}, tok, out / "actor_ema")
        extra = {}
        if refresh is not None:
            save_hf(models.reward_models[0].module.model, tok, out / "reward_model", r.reward_zero_stage)
            extra["reward_refresh"] = refresh.summary()
        log.info("saved actor%s%s%s under %s", " and critic" if critic is not None else "",
                 ", actor_ema" if trainer.ema is not None else "",
                 ", the refreshed reward_model" if refresh is not None else "", out)
        run_ctx.summary(iterations=iterations, algo=c.algo, first_eval=first, final_eval=final, data=stats, **extra)
        return {"first": first, "final": final}


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
