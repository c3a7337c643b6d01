"""How well do reward models judge the policy's own answers? Paired, on one set of sampled answers.

    python scripts/bench/rm_judgement.py --eval output/reward-models/smollm2-135m/on_policy_eval.jsonl \\
        --reward-model output/reward-models/smollm2-135m other/reward-models/smollm2-135m

``--eval`` is a stage-2 ``on_policy_eval.jsonl`` (held-out prompts, K sampled answers each, the labeller's
labels). Every reward model scores the same answers; the table gives the global AUC, the within-prompt
AUC (two answers to one prompt: what PPO's per-prompt advantages depend on) with its pair count, and
the within-prompt AUC per group of prompts (the bundled data's task when the checker can read it).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from training.utils.data.checker import parse_task  # noqa: E402
from training.utils.data.format import render_prompt, to_messages  # noqa: E402
from training.utils.labels.ranking import within_prompt_auc  # noqa: E402
from training.utils.labels.policy import on_policy_auc  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", required=True, help="a stage-2 on_policy_eval.jsonl")
    ap.add_argument("--reward-model", nargs="+", required=True)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    from inference.rw_eval import Scorer

    records = [json.loads(x) for x in Path(a.eval).read_text().splitlines() if x.strip()]
    out = {}
    for rm in a.reward_model:
        scorer = Scorer(rm)
        tok = scorer.tok
        scores = scorer.score([(r["prompt"], ans) for r in records for ans in r["answers"]])
        res = on_policy_auc(records, scores)
        per_task: dict[str, list] = {}
        i = 0
        for r in records:
            k = len(r["answers"])
            msgs = r["prompt"] if isinstance(r["prompt"], list) else to_messages(r["prompt"])
            t = parse_task(render_prompt(tok, msgs))
            task = t.name if t is not None else "other"
            per_task.setdefault(task, []).append((scores[i:i + k], r["labels"]))
            i += k
        res["per_task"] = {t: within_prompt_auc(g) for t, g in sorted(per_task.items())}
        out[rm] = res
        fmt = lambda x: "-" if x is None else f"{x:.3f}"
        tasks = "  ".join(f"{t} {fmt(v)} ({n})" for t, (v, n) in res["per_task"].items() if n)
        print(f"{rm}: AUC {fmt(res['on_policy_auc'])}, within a prompt {fmt(res['on_policy_within_prompt_auc'])} "
              f"over {res['within_prompt_pairs']} pairs ({res['prompts']} prompts, {res['answers']} answers)\n  {tasks}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
