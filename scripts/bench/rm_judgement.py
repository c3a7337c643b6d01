"""How well do reward models judge the policy's own answers? Paired, on one set of sampled answers.

    python scripts/bench/rm_judgement.py --eval output/reward-models/smollm2-135m/on_policy_eval.jsonl \\
        --reward-model output/reward-models/smollm2-135m other/reward-models/smollm2-135m
    python scripts/bench/rm_judgement.py --sample test --policy output/actor-models/smollm2-135m \\
        --eval bench-out/sft-test-samples.jsonl --reward-model output/reward-models/smollm2-135m

``--eval`` is a stage-2 ``on_policy_eval.jsonl`` (held-out prompts, K sampled answers each, the labeller's
labels). With ``--sample dev|test`` it is written first (unless it exists): ``--policy`` samples ``--k``
answers (temperature 1, 48 tokens, seeded) to each of the set's first ``--prompts`` prompts (task-balanced)
and the bundled checker labels them; the same file then serves every reward model compared. Every reward model
scores the same answers; the table gives the global AUC, the within-prompt
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


def sample_eval_file(split: str, policy: str, k: int, n: int, seed: int, out: Path) -> None:
    """``out``: {prompt, answers, labels} per prompt of the evaluation set ``split``: ``k`` sampled answers
    of ``policy``, labelled 1 / 0 by the bundled checker."""
    import torch

    from inference.passrate import eval_prompts
    from training.utils.data.checker import check
    from training.utils.labels.policy import Sampler
    from training.utils.model import load_causal_lm, load_tokenizer

    tok = load_tokenizer(policy, padding_side="left")
    sampler = Sampler(load_causal_lm(policy, tok).eval(), tok, k, 48, 1.0, 256)
    prompts = [to_messages(p) for p in eval_prompts(split, n)]
    torch.manual_seed(seed)
    rows = [{"prompt": m, "answers": ans, "labels": [float(check(m[-1]["content"], x)) for x in ans]}
            for m, ans in zip(prompts, sampler(prompts))]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {out}: {len(rows)} {split} prompts x {k} answers of {policy} ({sampler.seconds:.0f} s), "
          f"pass-rate {sum(sum(r['labels']) for r in rows) / (k * len(rows)):.3f}", flush=True)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", required=True, help="a stage-2 on_policy_eval.jsonl")
    ap.add_argument("--reward-model", nargs="+", required=True)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--sample", choices=("dev", "test"), help="sample the --eval file on this evaluation set first")
    ap.add_argument("--policy", help="with --sample: the model whose answers are judged (e.g. the SFT model)")
    ap.add_argument("--k", type=int, default=4, help="with --sample: answers per prompt")
    ap.add_argument("--prompts", type=int, default=0, help="with --sample: the set's first N prompts (0: all)")
    ap.add_argument("--seed", type=int, default=0, help="with --sample: the sampling seed")
    a = ap.parse_args(argv)
    from inference.rw_eval import Scorer

    if a.sample and not Path(a.eval).is_file():
        if not a.policy:
            ap.error("--sample needs --policy")
        sample_eval_file(a.sample, a.policy, a.k, a.prompts, a.seed, Path(a.eval))

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
        print(
            f"{rm}: AUC {fmt(res['on_policy_auc'])}, within a prompt {fmt(res['on_policy_within_prompt_auc'])} "
            f"over {res['within_prompt_pairs']} pairs ({res['prompts']} prompts, {res['answers']} answers)\n  {tasks}"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
