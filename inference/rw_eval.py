"""Score prompt/answer pairs with a trained reward model and print a table.

    python -m inference.rw_eval --model output/reward-models/smollm2-135m \\
        --prompt "Compute 2 + 2. Reply with the number only." --answers "4" "5" "four"
    python -m inference.rw_eval --model output/reward-models/smollm2-135m --data eval.jsonl --limit 20
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from training.utils.data.format import answer_token_ids, prompt_token_ids, render_answer, render_prompt, to_messages
from training.utils.data.sources import Keys, read_rows
from training.utils.model import ValueModel, load_reward_model, load_tokenizer
from training.utils.shared_prefix import score_rows


class Scorer:
    """Scores (prompt, answer) pairs exactly as Stage 2 saw them in training."""

    def __init__(self, model_name: str, template: str = "auto"):
        self.tok = load_tokenizer(model_name, padding_side="right")
        self.model = ValueModel(load_reward_model(model_name, self.tok)).eval()
        self.template = template

    def encode(self, prompt, answer: str) -> tuple[list[int], list[int]]:
        """(prompt tokens, answer tokens ending in EOS), as Stage 2 tokenised its pairs."""
        t = self.tok
        p = prompt_token_ids(t, render_prompt(t, to_messages(prompt), self.template), self.template)
        return p, answer_token_ids(t, render_answer(answer, t, self.template))

    @torch.no_grad()
    def score(self, pairs: list[tuple], batch_size: int = 16) -> list[float]:
        """One score per (prompt, answer) pair, in the order given. The pairs run ordered by prompt,
        so the answers to one prompt share a batch and the prompt runs once for them
        (``shared_prefix.answer_end_scores``)."""
        enc = [self.encode(p, a) for p, a in pairs]
        order = sorted(range(len(enc)), key=lambda i: enc[i][0])
        out = [0.0] * len(enc)
        for i, v in zip(order, score_rows(self.model, [enc[i] for i in order], self.tok.pad_token_id, batch_size)):
            out[i] = v
        return out


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", help="one prompt ...")
    ap.add_argument("--answers", nargs="+", help="... and the answers to score for it")
    ap.add_argument("--data", help="a .json/.jsonl file of {prompt, chosen, rejected} rows")
    ap.add_argument("--limit", type=int, default=20)
    a = ap.parse_args(argv)
    scorer = Scorer(a.model)
    rows = []
    if a.prompt and a.answers:
        for ans, s in zip(a.answers, scorer.score([(a.prompt, x) for x in a.answers])):
            rows.append({"prompt": a.prompt, "answer": ans, "score": s})
        print(f"{'score':>9}  answer   (prompt: {a.prompt[:70]})")
        for r in rows:
            print(f"{r['score']:9.4f}  {r['answer'][:80]!r}")
    elif a.data:
        data = read_rows(Path(a.data), Keys())[:a.limit]
        pairs = [(r["prompt"], r["chosen"]) for r in data] + [(r["prompt"], r["rejected"]) for r in data
                                                              if r["rejected"]]
        scores = scorer.score(pairs)
        sc, sr = scores[:len(data)], scores[len(data):]
        print(f"{'chosen':>9} {'rejected':>9}  ok  prompt")
        for r, c, j in zip(data, sc, sr):
            rows.append({"prompt": r["prompt"][-1]["content"], "chosen": c, "rejected": j})
            print(f"{c:9.4f} {j:9.4f}  {'y' if c > j else 'n':>2}  {r['prompt'][-1]['content'][:70]!r}")
        if sr:
            print(f"pairwise accuracy {sum(c > j for c, j in zip(sc, sr)) / len(sr):.3f} on {len(sr)} pairs")
    else:
        ap.error("give --prompt with --answers, or --data")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
