"""The closing report of a train.py run: every model answers the same evaluation prompts (greedy;
the bundled ``test`` set, or ``dev`` with ``--eval-set dev``), the bundled checker judges them, the
run's reward model scores them, and a table sums it up with 95% intervals on every pass-rate and gain.

The checker only judges here: it never rewards a run whose reward is the trained reward model.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from inference.intervals import interval_text
from training.utils.data.sources import only_bundled
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
                 max_new_tokens: int = 64, batch_size: int = 288, rm_prompts: int = 0, tools_cfg=None,
                 engine: str = "hf") -> dict[str, dict]:
    """{name: {pass_rate, per_task, answers[, rm_score]}} for each actor on ``prompts``; the reward model
    scores every model's answers to the first ``rm_prompts`` prompts (0: all). With ``tools_cfg`` (stage 3's
    tools section) every model answers in conversations with those tools."""
    from inference.answer_cache import cache_dir as answer_cache_dir
    from inference.passrate import evaluate_model

    results = {}
    for name, path in actors.items():
        print(f"closing evaluation: {name} ({path}) answers {len(prompts)} evaluation prompts", flush=True)
        results[name] = evaluate_model(path, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                       prompts=prompts, progress=f"eval {name}", cache=True, tools_cfg=tools_cfg,
                                       engine=engine if tools_cfg is None else "hf")
        if results[name]["cached"]:
            print(f"closing evaluation: {name}: same weights, prompts and settings as an earlier run; "
                  f"answers reused from {answer_cache_dir()}", flush=True)
    if reward_model:
        from inference.rw_eval import Scorer

        k = rm_prompts or len(prompts)
        scorer = Scorer(reward_model)      # all models' answers in one call: a prompt runs once for them
        answers = [a for r in results.values() for a in r["answers"][:k]]
        for a, s in zip(answers, scorer.score([(a["prompt"], a["answer"]) for a in answers], batch_size=32)):
            a["rm_score"] = s
        for r in results.values():
            r["rm_score"] = sum(a["rm_score"] for a in r["answers"][:k]) / len(r["answers"][:k])
    return results


def table(report: dict) -> str:
    """model | pass-rate with its 95% interval | gain with its interval | mean reward-model score | KL to
    reference, as a text table."""
    rates, ci = report.get("pass_rate", {}), report.get("pass_rate_ci", {})
    gains = report.get("gain", {})
    rm = report.get("rm_score", {})
    kl = report.get("kl_to_reference", {})
    where = f"{report.get('held_out_prompts', '?')} {report.get('eval_set', 'held-out')}"
    head = ["model", f"pass-rate ({where} prompts)", "95% interval", "gain (points)", "95% interval",
            f"mean RM score (first {report.get('rm_scored_prompts', '?')})", "KL to reference"]
    rows = [head]
    for name, rate in rates.items():
        g = gains.get(name)
        rows.append([name, f"{rate:.3f}", interval_text(*ci[name]) if name in ci else "-",
                     f"{100 * g['gain']:+.1f} over {g['over']}" if g else "-",
                     interval_text(g["lo"], g["hi"], signed=True) if g else "-",
                     f"{rm[name]:.3f}" if name in rm else "-", f"{kl[name]:.3f}" if name in kl else "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(rows[0]), "|-" + "-|-".join("-" * w for w in widths) + "-|"] + [line(r) for r in rows[1:]])


def gains_of(results: dict[str, dict]) -> dict[str, dict]:
    """{model: gain over the model it started from}: the SFT model over the base, every later model over
    the SFT model; each {over, gain, lo, hi, n, per_task} with paired-bootstrap 95% intervals."""
    from inference.passrate import gain

    out = {}
    for name, r in results.items():
        over = "base" if name == "sft" else "sft" if name != "base" else None
        if over in results:
            out[name] = {"over": over, **gain(results[over]["answers"], r["answers"])}
    return out


def build_report(plan, steps: list[int], cfgs: dict, times: dict, t_start: float) -> tuple[dict, dict]:
    """(report.json's contents, the answers of the closing evaluation) of a finished run of ``steps``:
    each stage's figures from its summary, and the greedy pass-rate of each model on held-out prompts."""
    import time

    args, out = plan.args, Path(plan.args.output_dir)
    report = {"stage_seconds": {str(k): round(v, 1) for k, v in times.items()}, "models": {},
              "stage_dirs": {str(s): str(plan.output(s)) for s in steps}}
    rm_dir, answers = None, {}
    if 2 in steps and not plan.offline or 3 in steps and plan.critic:
        rm_dir = plan.output(2)
        rm_summary = json.loads((rm_dir / "summary.json").read_text())
        rm = rm_summary["final_eval"]
        # the dataset's chosen/rejected pairs: on the bundled data they are made with the checker too, so they
        # are counted beside the labels (synthetic pairs: rows of the training set, repeats included)
        report["reward_model"] = {"held_out_pair_accuracy": rm["acc"], "margin": rm["margin"],
                                  "synthetic_pairs": rm_summary["data"]["train"]["kept"]}
        comp = rm_summary.get("comparisons")
        if comp:        # comparison data from the policy: the labels it cost and the on-policy AUC
            report["reward_model"].update(
                labeller=comp["labeller"],
                labels=comp.get("labels", 0),
                label_budget=comp.get("label_budget"),
                policy_pairs=comp.get("pairs", 0),
                eval_labels=comp.get("eval_labels", 0),
                **{
                    k: rm[k] for k in ("on_policy_auc", "on_policy_within_prompt_auc", "within_prompt_pairs") if k in rm
                },
            )
        report["models"]["reward"] = str(rm_dir)
    actors = {"base": args.actor_model}
    if 1 in steps or 3 in steps or plan.offline:
        actors["sft"] = plan.sft_model()
    if 2 in steps and plan.offline:
        actors[plan.algo] = str(plan.output(2))
    if 3 in steps:
        actors[args.algo] = str(plan.output(3) / "actor")
        rl = rl_figures(plan.output(3))
        report[args.algo] = rl
        for key in ("reward_trend", "gold_trend", "agreement_trend", "reward_refresh"):
            if key in rl:
                report[key] = rl[key]
        if "reward_refresh" in rl and "reward_model" in report:  # the labels of stage 2 and of stage 3 together
            report["reward_model"]["labels_total"] = (
                report["reward_model"].get("labels", 0) + rl["reward_refresh"]["labels"]
            )
        report["kl_to_reference"] = {"sft": 0.0}
        if "final_kl" in rl:     # absent when the run loaded no reference model (critic-free, kl_coef 0)
            report["kl_to_reference"][args.algo] = rl["final_kl"]
    if 3 in steps and not only_bundled(cfgs[3].data.data_path):
        # the user's own data: its evaluation prompts, scored by its own metric in stage 3 (--eval_reward), at
        # the start and the end; the bundled checker's held-out prompts would measure another task
        s3 = json.loads((plan.output(3) / "summary.json").read_text())
        first, final = s3.get("first_eval") or {}, s3.get("final_eval") or {}
        report["pass_rate"] = {k: e["pass_rate"] for k, e in (("sft", first), (args.algo, final)) if "pass_rate" in e}
        report["eval_reward"] = {k: e["eval_reward"] for k, e in (("sft", first), (args.algo, final))
                                 if "eval_reward" in e}
        report["held_out_prompts"] = s3["data"]["eval"]["kept"]
        report["evaluation"] = "stage 3's own metric on the evaluation prompts of " + " ".join(cfgs[3].data.data_path)
        report["models"].update({k: v for k, v in actors.items() if k != "base"})
        actors = {}
    if len(actors) > 1:
        from inference.passrate import eval_prompts

        n = args.eval_prompts or (36 if args.actor_model in ("tiny", "tiny-opt") else 0)
        prompts = eval_prompts(args.eval_set, n)
        t_eval = time.time()
        tools = cfgs[3].tools if 3 in steps and (cfgs[3].tools.tools or cfgs[3].tools.environment) else None
        res = closing_eval(actors, prompts, str(rm_dir) if rm_dir else None, args.eval_max_new_tokens,
                           rm_prompts=args.eval_rm_prompts, tools_cfg=tools, engine=args.eval_engine)
        if tools is not None:     # every model answered with the tools, in conversations of up to max_turns
            report["tools"] = {"tools": tools.tools, "environment": tools.environment, "max_turns": tools.max_turns}
        report["seconds"] = {"closing_eval": round(time.time() - t_eval, 1)}
        report["eval_set"], report["held_out_prompts"] = args.eval_set, len(prompts)
        for key in ("pass_rate", "pass_rate_ci", "per_task", "per_task_ci", "per_task_n"):
            report[key] = {k: r[key] for k, r in res.items()}
        report["gain"] = gains_of(res)
        if rm_dir:
            report["rm_score"] = {k: r["rm_score"] for k, r in res.items()}
            report["rm_scored_prompts"] = min(args.eval_rm_prompts or len(prompts), len(prompts))
        answers = {k: r["answers"] for k, r in res.items()}
        (out / "answers.json").write_text(json.dumps(answers, indent=1) + "\n")
        report["models"].update({k: v for k, v in actors.items() if k != "base"})
    if 1 in steps:
        report["sft_eval"] = json.loads((plan.output(1) / "summary.json").read_text())["final_eval"]
    secs = report.setdefault("seconds", {})
    secs["total"] = round(time.time() - t_start, 1)
    report["plots"] = sorted(str(p) for s in steps for p in plan.output(s).glob("*.png"))
    return report, answers
