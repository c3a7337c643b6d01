"""The closing report of a train.py run: every model answers the same held-out prompts (greedy),
the bundled checker judges them, the run's reward model scores them, and a table sums it up.

The checker only judges here: it never rewards a run whose reward is the trained reward model.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from training.utils.logging import read_metrics


def rl_figures(stage_dir: Path) -> dict:
    """From a stage-3 output: first/final eval, the last KL to the reference, the reward trend (mean
    training reward of the first and the last three iterations), the judge's verdict of the rollouts
    beside it with the reward's agreement with the judge, and the reward-model refreshes (iterated RLHF)."""
    rl = json.loads((stage_dir / "summary.json").read_text())
    out = {"first_eval": rl["first_eval"], "final_eval": rl["final_eval"]}
    train = [r for r in read_metrics(stage_dir / "metrics.jsonl") if r["split"] == "train" and "reward" in r]
    if train:
        if "kl" in train[-1]:     # k3 where logged: a KL estimate that cannot be negative
            out["final_kl"] = train[-1].get("kl_k3", train[-1]["kl"])
        k = min(3, len(train))
        first = sum(r["reward"] for r in train[:k]) / k
        last = sum(r["reward"] for r in train[-k:]) / k
        out["reward_trend"] = {"first3": first, "last3": last, "rising": last > first}
        gold = next((k for k in ("rollout_pass_rate", "judge_score") if k in train[0]), None)
        if gold:     # the proxy (the reward) against the gold (the judge) over the iterations
            judged = [r for r in train if gold in r]
            out["proxy_vs_gold"] = {"iterations": [r["step"] for r in judged], "reward": [r["reward"] for r in judged],
                                    "gold": [r[gold] for r in judged], "gold_name": gold,
                                    "agreement": [r.get("reward_judge_auc") for r in judged]}
            g = out["proxy_vs_gold"]["gold"]
            k = min(3, len(g))
            out["gold_trend"] = {"first3": sum(g[:k]) / k, "last3": sum(g[-k:]) / k, "rising": sum(g[-k:]) > sum(g[:k])}
            agree = [x for x in out["proxy_vs_gold"]["agreement"] if x is not None]
            if agree:    # the reward's within-prompt AUC against the judge on the rollouts, early and late
                k = min(3, len(agree))
                out["agreement_trend"] = {"first3": sum(agree[:k]) / k, "last3": sum(agree[-k:]) / k}
    if "reward_refresh" in rl:      # iterated RLHF: the labels and pairs the refreshes of the reward model used
        out["reward_refresh"] = rl["reward_refresh"]
    return out


def closing_eval(actors: dict[str, str], prompts: list[str], reward_model: Optional[str],
                 max_new_tokens: int = 64, batch_size: int = 32) -> dict[str, dict]:
    """{name: {pass_rate, per_task, answers[, rm_score]}} for each actor on ``prompts``."""
    from inference.answer_cache import cache_dir as answer_cache_dir
    from inference.passrate import evaluate_model

    results = {}
    for name, path in actors.items():
        print(f"closing evaluation: {name} ({path}) answers {len(prompts)} held-out prompts", flush=True)
        results[name] = evaluate_model(path, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                       prompts=prompts, progress=f"eval {name}", cache=True)
        if results[name]["cached"]:
            print(f"closing evaluation: {name}: same weights, prompts and settings as an earlier run; "
                  f"answers reused from {answer_cache_dir()}", flush=True)
    if reward_model:
        from inference.rw_eval import Scorer

        scorer = Scorer(reward_model)      # all models' answers in one call: a prompt runs once for them
        answers = [a for r in results.values() for a in r["answers"]]
        for a, s in zip(answers, scorer.score([(a["prompt"], a["answer"]) for a in answers], batch_size=32)):
            a["rm_score"] = s
        for r in results.values():
            r["rm_score"] = sum(a["rm_score"] for a in r["answers"]) / len(r["answers"])
    return results


def table(report: dict) -> str:
    """model | held-out pass-rate | mean reward-model score | KL to reference, as a text table."""
    rates = report.get("pass_rate", {})
    fresh = report.get("fresh_pass_rate", {})
    rm = report.get("rm_score", {})
    kl = report.get("kl_to_reference", {})
    head = ["model", f"pass-rate ({report.get('held_out_prompts', '?')} held-out)"]
    if fresh:
        head.append(f"fresh ({report.get('fresh_prompts')})")
    head += ["mean RM score", "KL to reference"]
    rows = [head]
    for name, rate in rates.items():
        row = [name, f"{rate:.3f}"]
        if fresh:
            row.append(f"{fresh[name]:.3f}" if name in fresh else "-")
        row.append(f"{rm[name]:.3f}" if name in rm else "-")
        row.append(f"{kl[name]:.3f}" if name in kl else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(rows[0]), "|-" + "-|-".join("-" * w for w in widths) + "-|"] + [line(r) for r in rows[1:]])
