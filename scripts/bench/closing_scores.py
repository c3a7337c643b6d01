"""Seconds the closing report spends scoring every model's greedy answers with the reward model:
each model's answers in its own batches, every row whole (plain), against all answers in one call
ordered by prompt, a prompt once per batch (``inference.rw_eval.Scorer``).

    python scripts/bench/closing_scores.py --reward-model output/reward-models/smollm2-135m \\
        --answers output/answers.json [--reps 3]

``answers.json`` is a ``train.py`` run's (base, SFT and RL answers to the same held-out prompts).
The two forms alternate in one process, so the machine's drift lands on both; the largest score
difference between them is printed beside the times (``tests/unit/test_reward.py`` asserts they agree).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reward-model", required=True, help="a reward model directory (Stage 2 output)")
    p.add_argument("--answers", required=True, help="answers.json of a train.py run")
    p.add_argument("--reps", type=int, default=3, help="passes of each form")
    p.add_argument("--batch-size", type=int, default=32, help="rows per forward (the closing report's)")
    p.add_argument("--json", default="", help="write the figures here too")
    a = p.parse_args(argv)

    import torch

    from inference.rw_eval import Scorer
    from training.utils.data.collate import pad_sequences
    from training.utils.model import end_scores

    answers = json.loads(Path(a.answers).read_text())
    scorer = Scorer(a.reward_model)
    per_model = [[(x["prompt"], x["answer"]) for x in rows] for rows in answers.values()]
    every = [pair for rows in per_model for pair in rows]

    @torch.no_grad()
    def plain() -> list[float]:
        out = []
        for rows in per_model:
            for i in range(0, len(rows), a.batch_size):
                seqs = [sum(scorer.encode(q, ans), []) for q, ans in rows[i:i + a.batch_size]]
                ids, mask = pad_sequences(seqs, scorer.tok.pad_token_id, left=False)
                out += end_scores(scorer.model(ids, mask), torch.tensor([len(s) - 1 for s in seqs])).tolist()
        return out

    forms = {"plain, per model": plain, "prompt once": lambda: scorer.score(every, batch_size=a.batch_size)}
    secs = {k: 0.0 for k in forms}
    scores = {}
    for _ in range(a.reps):
        for name, fn in forms.items():
            t0 = time.perf_counter()
            scores[name] = fn()
            secs[name] += time.perf_counter() - t0
    diff = max(abs(x - y) for x, y in zip(*scores.values()))
    out = {"answers": len(every), "models": list(answers), "torch_threads": torch.get_num_threads(),
           "seconds": {k: v / a.reps for k, v in secs.items()}, "max_abs_score_diff": diff}
    base = out["seconds"]["plain, per model"]
    print(f"{len(every)} answers of {', '.join(answers)}; largest score difference {diff:.2e}")
    for name, s in out["seconds"].items():
        print(f"{name:18} {s:8.2f} s   {base / s:5.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
