"""Stage 3: RL on the Hybrid Engine actor with a frozen reference.

PPO (default) adds a critic (initialised from the reward model); GRPO, RLOO and ReMax are
critic-free and compare several answers per prompt. Rewards come from a trained reward model, rule
functions (the bundled checker), an HTTP endpoint, or a weighted sum (``--reward``).

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
from dataclasses import replace

import torch
from tqdm.auto import tqdm

from training.utils.config import ConfigError, parse_config
from training.utils.data import PromptCollator, SFTCollator
from training.utils.data.checker import check, parse_task, pass_rate
from training.utils.distributed import all_reduce_sum, is_main
from training.utils.engine import build_train_engine, frozen
from training.utils.hybrid_engine import GenerationSettings, HybridEngine
from training.utils import checkpoint, faults
from training.utils.loop import NonFinite, make_loader, to_device
from training.utils.model import ValueModel, apply_lora, load_causal_lm, load_reward_model, save_hf
from training.utils.model.reward import head
from training.utils.model.save import write_hf
from training.utils.stage import StageRun, run_cli
from training.utils.rl.advantages import ESTIMATORS
from training.utils.rl.experience import ExperienceMaker, answer_layout, position_ids_from
from training.utils.rl.group_trainer import GroupTrainer, repeat_batch
from training.utils.rl.ppo_trainer import PPOTrainer, cycle
from training.utils.rl.rewards import Rollout, build_reward, decode_answers


def batch_reward(reward, tok):
    """The (seq, attn, pos, end, batch) -> [B] form the experience maker and evaluation call.

    ``score.checked`` accumulates (passed, judged) of the bundled checker over the rollouts scored
    since the last ``take_checked()``: a diagnostic the training log shows beside the reward (the
    checker judges here; it rewards only when it is one of the reward sources). Answers scored with
    ``rollout=False`` (evaluation, ReMax's greedy baselines) are not counted."""
    def score(seq, attn, pos, end, batch, rollout: bool = True):
        answers = decode_answers(tok, seq, batch["input_ids"].shape[1], end)
        prompts = batch.get("prompt_text") or [""] * seq.shape[0]
        if rollout:
            known = [(p, a) for p, a in zip(prompts, answers) if parse_task(p) is not None]
            score.checked[0] += sum(check(p, a) for p, a in known)
            score.checked[1] += len(known)
        return reward(Rollout(seq, attn, pos, end, prompts, answers)).to(seq.device)

    def take_checked() -> dict:
        passed, n = score.checked
        score.checked = [0, 0]
        return {"rollout_pass_rate": passed / n} if n else {}
    score.checked, score.take_checked = [0, 0], take_checked
    return score


class Faulty:
    """Wraps a reward so the reliability tests can make one iteration's rewards NaN."""

    def __init__(self, reward):
        self.reward, self.iteration = reward, 0
        self.parts = getattr(reward, "parts", {})

    def __call__(self, rollout):
        r = self.reward(rollout)
        return r * float("nan") if self.iteration and faults.nan_at(self.iteration) else r


@torch.no_grad()
def evaluate(he, reward_fn, loader, tok, max_new_tokens: int) -> dict:
    """Greedy answers on the held-out prompts: mean reward, length, and the checker pass-rate."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False)
    total = length = n = 0.0
    prompts, answers = [], []
    for batch in loader:
        batch = to_device(batch, he.engine.device)
        seq = he.generate(batch["input_ids"], batch["attention_mask"], settings)
        attn, action, end, _ = answer_layout(seq, batch["attention_mask"], tok.eos_token_id)
        r = reward_fn(seq, attn, position_ids_from(attn), end, batch, rollout=False)
        total += r.sum().item()
        length += action.sum().item()
        n += r.numel()
        p = batch["input_ids"].shape[1]
        prompts += batch["prompt_text"]
        answers += [tok.decode(s[p:], skip_special_tokens=True).strip() for s in seq]
    known = [(p, a) for p, a in zip(prompts, answers) if parse_task(p) is not None]
    passed = pass_rate([p for p, _ in known], [a for _, a in known])["pass_rate"] * len(known) if known else 0.0
    total, length, n, passed, n_known = all_reduce_sum([total, length, n, passed, float(len(known))])
    out = {"reward": total / max(n, 1), "response_length": length / max(n, 1)}
    if n_known:
        out["pass_rate"] = passed / n_known
    return out


def counted(iterator, used: list):
    for x in iterator:
        used[0] += 1
        yield x


def main(argv=None) -> dict:
    cfg = parse_config(argv, "Stage 3: RLHF with PPO, GRPO, RLOO or ReMax")
    c = cfg.ppo
    if c.algo == "ppo" and c.reward == ["model"] and not c.reward_model_name_or_path:
        raise ConfigError("stage 3 needs --reward_model_name_or_path (the Stage 2 output directory), "
                          "or a rule reward such as --reward checker")
    with StageRun(cfg, c.algo) as run_ctx:
        log, dev = run_ctx.log, run_ctx.device
        actor_name = cfg.model.model_name_or_path
        tok = run_ctx.tokenizer("left")
        train_ds, eval_ds, stats = run_ctx.phase_data(tok, 3)
        prompts, eval_loader = run_ctx.loaders(train_ds, eval_ds, PromptCollator(tok.pad_token_id),
                                               c.per_device_generation_batch_size, cfg.optim.per_device_eval_batch_size)
        iterations = cfg.optim.max_steps or max(1, len(prompts) // c.generation_batches) * cfg.optim.num_train_epochs
        micro = c.per_device_training_batch_size
        rows = c.per_device_generation_batch_size * c.num_samples_per_prompt
        updates = iterations * c.ppo_epochs * c.generation_batches * math.ceil(rows / micro)
        unsup_iter = None
        if c.unsup_coef > 0 and c.algo == "ppo":
            sft_ds, _, _ = run_ctx.phase_data(tok, 1)
            unsup_iter = cycle(make_loader(sft_ds, micro, SFTCollator(tok.pad_token_id), True, cfg.optim.seed))
            updates *= 2

        actor_cfg = replace(cfg, optim=replace(cfg.optim, per_device_train_batch_size=micro))
        actor = apply_lora(load_causal_lm(actor_name, tok, trust_remote_code=cfg.model.trust_remote_code,
                                          dropout=0.0 if c.disable_actor_dropout else cfg.model.dropout,
                                          seed=cfg.optim.seed), cfg.lora)
        he = HybridEngine(build_train_engine(actor, actor_cfg, updates), tok, cfg.ds.zero_stage)
        ref = None
        if c.algo == "ppo" or c.kl_coef > 0 or ESTIMATORS[c.algo].loss == "dpo":
            ref_stage = 3 if cfg.ds.zero_stage == 3 or c.offload_reference_model else 0
            ref = frozen(load_causal_lm(actor_name, tok, trust_remote_code=cfg.model.trust_remote_code,
                                        seed=cfg.optim.seed), cfg, ref_stage, c.offload_reference_model)
        reward = build_reward(c.reward, c.reward_weights, timeout=c.reward_timeout,
                              default_model=c.reward_model_name_or_path,
                              load_model=lambda path: frozen(ValueModel(load_reward_model(path, tok)), cfg,
                                                             c.reward_zero_stage))
        log.info("reward: %s", " + ".join(f"{w:g} x {n}" for w, n in zip(reward.weights, reward.names)))
        reward = Faulty(reward)
        reward_fn = batch_reward(reward, tok)

        if c.algo == "ppo":
            critic_name = c.critic_model_name_or_path or c.reward_model_name_or_path or actor_name
            critic_cfg = replace(actor_cfg, optim=replace(actor_cfg.optim, learning_rate=c.critic_learning_rate),
                                 lora=replace(cfg.lora, lora_dim=c.critic_lora_dim, only_optimize_lora=c.critic_lora_dim > 0),
                                 model=replace(cfg.model, gradient_checkpointing=c.critic_gradient_checkpointing))
            critic_model = apply_lora(load_reward_model(critic_name, tok, seed=cfg.optim.seed,
                                                        dropout=0.0 if c.disable_critic_dropout else cfg.model.dropout),
                                      critic_cfg.lora)
            for p in head(critic_model).parameters():
                p.requires_grad_(True)  # the value head trains even when only the LoRA weights do
            critic = build_train_engine(ValueModel(critic_model), critic_cfg, updates, zero_stage=c.critic_zero_stage)
            trainer = PPOTrainer(he, critic, c, cfg.ds.zero_stage, unsup_iter)
            maker = ExperienceMaker(he, ref, critic, reward_fn, tok, c, cfg.data.max_answer_seq_len, trainer.kl_coef)

            engines = {"actor": he.engine, "critic": critic}

            def iteration(it, batches):
                exps, roll = [], []
                for b in batches:
                    exp, m = maker.make(repeat_batch(b, c.num_samples_per_prompt))
                    exps.append(exp)
                    roll.append(m)
                if not guard.check(torch.cat([e.score for e in exps]), "reward", it):
                    return {"skipped_updates": 1.0}, len(roll)
                metrics = {k: sum(m[k] for m in roll) / len(roll) for k in roll[0]}
                metrics.update(trainer.train(exps, it - 1, micro, dev))
                trainer.after_rollouts(metrics["kl"], c.generation_batches * rows)
                metrics["e2e_tokens"] = sum(int(e.attention_mask.sum()) for e in exps)
                metrics["generated_tokens"] = sum(int(e.action_mask.sum()) for e in exps)
                return metrics, len(roll)
            log.info("PPO: %d iterations x %d rollout batch(es) of %d prompts x %d answers%s, %d epoch(s), "
                     "micro-batch %d, actor ZeRO-%d, critic ZeRO-%d", iterations, c.generation_batches,
                     c.per_device_generation_batch_size, c.num_samples_per_prompt,
                     " (group baseline)" if c.group_baseline else "", c.ppo_epochs, micro, cfg.ds.zero_stage,
                     c.critic_zero_stage)
        else:
            critic, maker, trainer = None, None, GroupTrainer(he, ref, reward_fn, tok, c, cfg.data.max_answer_seq_len,
                                                            cfg.dpo.beta)
            engines = {"actor": he.engine}

            def iteration(it, batches):
                groups, roll = [], []
                for b in batches:
                    gb, m = trainer.rollout(b)
                    if len(reward.parts) > 1:       # per-source means of this rollout's rewards
                        m.update({f"reward/{k}": v for k, v in reward.parts.items()})
                    roll.append(m)
                    if gb is not None:
                        groups.append(gb)
                if not guard.check(torch.tensor([m["reward"] for m in roll]), "reward", it):
                    return {"skipped_updates": 1.0}, len(roll)
                metrics = {k: sum(m.get(k, 0.0) for m in roll) / len(roll) for k in roll[0]}
                if groups:
                    metrics.update(trainer.train(groups, micro))
                else:
                    metrics["train_s"] = 0.0
                    log.info("iteration %d: every group scored uniformly; no update", it)
                metrics["skipped_updates"] = float(not groups)
                metrics["e2e_tokens"] = sum(int(g.attention_mask.sum()) for g in groups)
                metrics["generated_tokens"] = sum(int(g.action_mask.sum()) for g in groups)
                return metrics, len(roll)
            log.info("%s: %d iterations x %d rollout batch(es) of %d prompts x %d answers, %d epoch(s), "
                     "micro-batch %d, actor ZeRO-%d, KL %s (coef %g), loss reduction %s%s", c.algo.upper(),
                     iterations, c.generation_batches, c.per_device_generation_batch_size, c.num_samples_per_prompt,
                     c.ppo_epochs, micro, cfg.ds.zero_stage,
                     "in the reward" if trainer.kl_in_reward else "k3 loss", c.kl_coef,
                     trainer.loss_agg, ", dynamic filtering" if c.dynamic_filtering else "")

        w = run_ctx.writer
        do_eval = lambda: evaluate(he, reward_fn, eval_loader, tok, cfg.data.max_answer_seq_len) if eval_loader else {}
        unsup_used = [0]
        if unsup_iter is not None:
            unsup_iter = counted(unsup_iter, unsup_used)
            trainer.unsup_iter = unsup_iter
        it_prompts = cycle(prompts)
        start, first = 0, None
        resume = checkpoint.find_resume(cfg)
        if resume is not None:
            st = checkpoint.load(resume, engines)
            start, first = st["step"], st["first_eval"]
            w.rewind(start)
            trainer.load_state_dict(st, resume)
            if maker is not None:
                maker.load_state_dict(st)
            for _ in range(start * c.generation_batches):      # prompt batches the run had used
                next(it_prompts)
            for _ in range(st.get("unsup_batches", 0)):
                next(unsup_iter)
        guard = NonFinite(cfg.ckpt.max_nonfinite, cfg.log.output_dir, st["nonfinite"] if resume else 0)
        trainer.guard = guard
        if first is None and cfg.log.eval_at_start:
            first = do_eval()
            w.log(0, "eval", first)
            log.info("step 0 eval: %s", first)
        bar = tqdm(total=iterations, initial=start, desc=c.algo, disable=cfg.log.disable_tqdm or not is_main(),
                   dynamic_ncols=True)
        for it in range(start + 1, iterations + 1):
            reward.iteration = it
            batches = [to_device(next(it_prompts), dev) for _ in range(c.generation_batches)]
            metrics, n_roll = iteration(it, batches)
            reward.iteration = 0
            metrics.update(reward_fn.take_checked())
            if "train_s" in metrics:
                step_s = (metrics["generation_s"] + metrics["experience_s"]) * n_roll + metrics["train_s"]
                metrics["e2e_tokens_per_s"] = metrics.pop("e2e_tokens") / step_s if step_s > 0 else 0.0
            metrics["nonfinite_skipped"] = guard.total
            if it % cfg.log.log_interval == 0 or it == iterations:
                w.log(it, "train", metrics)
            bar.set_postfix({k: f"{metrics[k]:.3f}" for k in ("reward", "kl", "rollout_pass_rate") if k in metrics})
            bar.update(1)
            if cfg.log.eval_interval and it % cfg.log.eval_interval == 0 and it < iterations:
                ev = do_eval()
                w.log(it, "eval", ev)
                log.info("step %d eval: %s", it, ev)
            if cfg.ckpt.save_interval and it % cfg.ckpt.save_interval == 0 and it < iterations:
                state = {"first_eval": first, "unsup_batches": unsup_used[0], "nonfinite": guard.total,
                         **trainer.state_dict(), **(maker.state_dict() if maker is not None else {})}
                ema = getattr(trainer, "ema", None)
                checkpoint.save(cfg.log.output_dir, it, engines, state, cfg.ckpt.keep_checkpoints,
                                {"ema.safetensors": ema.shadow} if ema is not None and is_main() else None)
            faults.after_step(it)
        bar.close()
        final = do_eval()
        w.log(iterations, "eval", final)
        log.info("final eval: %s (step 0: %s)", final, first)
        out = run_ctx.out
        save_hf(he.module, tok, out / "actor", cfg.ds.zero_stage)
        if critic is not None:
            save_hf(critic.module.model, tok, out / "critic", c.critic_zero_stage)
        ema = getattr(trainer, "ema", None)
        if ema is not None:
            write_hf(he.module, {k: v for k, v in ema.shadow.items()} if is_main() else {}, tok, out / "actor_ema")
        log.info("saved actor%s%s under %s", " and critic" if critic is not None else "",
                 ", actor_ema" if ema is not None else "", out)
        run_ctx.summary(iterations=iterations, algo=c.algo, first_eval=first, final_eval=final, data=stats)
        return {"first": first, "final": final}


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
