"""Stage 2: reward model on chosen/rejected pairs (backbone + scalar head, score at the EOS).

With ``--pairs_from_policy`` it also learns from comparisons of the starting model's own answers
(K sampled per prompt, ranked by ``--labeller``; ``training/utils/labels``) and reports its
on-policy AUC: how often it ranks the policy's sampled answers as the labeller does.

    python training/step2_reward_model_finetuning/main.py --model_name_or_path smollm2-135m \\
        --data_path bundled --output_dir output/reward-models/smollm2-135m
    python training/step2_reward_model_finetuning/main.py --model_name_or_path output/actor-models/smollm2-135m \\
        --pairs_from_policy --labeller checker --label_budget 256 --output_dir output/reward-models/sft
"""
from __future__ import annotations

import sys

import torch

from training.utils.arguments import parse_config
from training.utils.data import PairCollator
from training.utils.config import ConfigError
from training.utils.distributed import all_reduce_sum, rank, world_size
from training.utils.loop import run, to_device
from training.utils.model import ValueModel, end_scores, load_reward_model, save_hf
from training.utils.model.reward import head
from training.utils.labels import comparisons
from training.utils.stage import StageRun, run_cli
from training.utils.losses import pairwise_loss, per_token_pair_loss, pointwise_loss
from training.utils.shared_prefix import answer_end_scores


def pair_scores(engine, batch, share: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen scores [B], rejected scores [B]): the head's value at each answer's EOS. With
    ``share`` a pair's prompt runs once and both answers continue from its KV cache."""
    scores = answer_end_scores(engine, batch, share)
    b = scores.shape[0] // 2
    return scores[:b], scores[b:]


def make_step(kind: str, share: bool, points=None, weight: float = 0.0):
    """The training step; with ``points`` (batches of labelled answers) it adds ``weight`` x their pointwise
    loss: the correctness head's term, in which every label counts."""
    def step(engine, batch):
        if kind == "pairwise":
            c, r = pair_scores(engine, batch, share)
            loss = pairwise_loss(c, r)
        else:     # per-token: every position of the right-padded rows
            values = engine(batch["input_ids"], batch["attention_mask"])
            c, r = end_scores(values, batch["end_index"]).chunk(2)
            b = c.shape[0]
            ids, end = batch["input_ids"], batch["end_index"]
            loss = per_token_pair_loss(values[:b], values[b:], ids[:b], ids[b:], end[:b] + 1, end[b:] + 1)
        metrics = {"acc": (c > r).float().mean().item(), "margin": (c - r).mean().item()}
        if points is not None:
            pb = to_device(next(points), engine.device)
            s = answer_end_scores(engine, pb, share)
            point = pointwise_loss(s, pb["label"])
            loss = loss + weight * point
            metrics.update(
                pointwise_loss=point.item(), pointwise_acc=((s > 0).float() == pb["label"]).float().mean().item()
            )
        return loss, metrics
    return step


@torch.no_grad()
def evaluate(engine, loader, share: bool = True, max_batches: int = 0) -> dict:
    """Pairwise accuracy, mean chosen / rejected score and margin over the eval slice (its first
    ``max_batches`` batches per rank when > 0: DeepSpeed-Chat's --eval_iters)."""
    engine.eval()
    correct = chosen = rejected = n = 0.0
    for i, batch in enumerate(loader):
        if max_batches and i == max_batches:
            break
        c, r = pair_scores(engine, to_device(batch, engine.device), share)
        correct += (c > r).sum().item()
        chosen += c.sum().item()
        rejected += r.sum().item()
        n += c.numel()
    correct, chosen, rejected, n = all_reduce_sum([correct, chosen, rejected, n])
    n = max(n, 1.0)
    return {"acc": correct / n, "chosen_score": chosen / n, "rejected_score": rejected / n,
            "margin": (chosen - rejected) / n, "pairs": n}


def value_model(model) -> ValueModel:
    for p in head(model).parameters():
        p.requires_grad_(True)  # the new head always trains, LoRA or not
    return ValueModel(model)


def main(argv=None) -> dict:
    cfg = parse_config(argv, "Stage 2: reward model", stage="reward")
    m = cfg.rm
    with StageRun(cfg, "reward") as run_ctx:
        comp = None
        if m.pairs_from_policy or m.export_for_labelling:
            tok = run_ctx.tokenizer("right")
            comp = comparisons.build(cfg, tok, run_ctx.log, run_ctx.out)
            if m.export_for_labelling:
                run_ctx.log.info("exported the comparisons to %s; no reward model trained (label them, then run again "
                                 "with --pairs_from_policy --labeller human:%s)", m.export_for_labelling,
                                 m.export_for_labelling)
                return {"exported": m.export_for_labelling}

        def augment(tok, train_ds):
            if comp is None:
                return train_ds
            from datasets import Dataset

            from training.utils.data.pipeline import tokenize_rows

            toks, st = tokenize_rows(comp.pairs, tok, 2, cfg.data)
            mixed = comparisons.mix(train_ds, Dataset.from_list(toks), m.policy_pair_weight, cfg.optim.seed) if toks \
                else train_ds
            run_ctx.log.info(
                "training rows: %d dataset pairs + %d policy pairs (%d kept of %d) at weight %g -> %d rows",
                len(train_ds),
                len(mixed) - (len(train_ds) if m.policy_pair_weight < 1 else 0),
                len(toks),
                len(comp.pairs),
                m.policy_pair_weight,
                len(mixed),
            )
            return mixed
        s = run_ctx.setup(2, load_reward_model, lambda tok: PairCollator(tok.pad_token_id), value_model, augment)
        engine = s.engine
        run_ctx.log.info("reward model: %d training pairs, %d eval pairs, %d optimizer steps, loss %s",
                         len(s.train_ds), len(s.eval_ds), s.total, cfg.rm.rm_loss)
        share = cfg.model.share_prompt_forward
        points = None
        if m.pointwise_weight > 0:
            if comp is None or not comp.labels:
                raise ConfigError("--pointwise_weight trains on the labelled answers of --pairs_from_policy (a rule, "
                                  "HTTP or checker labeller); this run has none")
            points = comparisons.label_batches(comp.labels, s.tok, cfg.data, m.pointwise_batch, cfg.optim.seed, rank(),
                                               world_size())
            run_ctx.log.info("pointwise term: %d labelled answers (mean label %.2f) at weight %g, %d per step",
                             len(comp.labels), sum(x["label"] for x in comp.labels) / len(comp.labels),
                             m.pointwise_weight, m.pointwise_batch)
        final = run(engine, s.train_loader, make_step(cfg.rm.rm_loss, share, points, m.pointwise_weight),
                    lambda: evaluate(engine, s.eval_loader, share, cfg.log.eval_iters),
                    cfg, run_ctx.writer, s.total, desc="reward")
        extra = {}
        if comp is not None:
            final.update(comparisons.measure(engine, s.tok, comp, cfg, run_ctx.log))
            extra["comparisons"] = comp.stats
        save_hf(engine.module.model, s.tok, cfg.log.output_dir, cfg.ds.zero_stage)
        run_ctx.log.info("saved the reward model to %s (eval accuracy %.3f)", cfg.log.output_dir, final.get("acc", 0.0))
        run_ctx.summary(steps=s.total, final_eval=final, data=s.stats, **extra)
        return final


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
