"""The cost of one decode step of Hugging Face ``generate`` on this machine, three ways and at several
batch sizes: the dynamic KV cache (what both this project and TRL use), a static cache, and a static
cache with the forward compiled by ``torch.compile`` (inductor; on CPU transformers compiles only
when told to, through ``CompileConfig._compile_all_devices``).

    python scripts/bench/decode_step.py --model smollm2-135m
    python scripts/bench/decode_step.py --model <dir> --modes dynamic --rows 4 16 32

Greedy, ``--new-tokens`` (48) new tokens forced (no early EOS) after ``--prompt-len`` (60) random
prompt tokens; each figure is the median of ``--reps`` (4) calls after the first (the first carries
the compile), divided by the new tokens: ms per step, and per row.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def step_ms(model, tok, mode: str, rows: int, prompt_len: int, new_tokens: int, reps: int) -> dict:
    import torch
    from transformers import CompileConfig

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 1000, (rows, prompt_len), generator=gen)
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True,
              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if mode != "dynamic":
        kw["cache_implementation"] = "static"
    compile_config = None
    if mode == "compiled":
        compile_config = CompileConfig(fullgraph=False, dynamic=False)
        compile_config._compile_all_devices = True
    model.generation_config.compile_config = compile_config
    times = []
    with torch.no_grad():
        for _ in range(reps + 1):
            t = time.time()
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
            times.append(time.time() - t)
    ms = statistics.median(times[1:]) / new_tokens * 1000
    return {"mode": mode, "rows": rows, "first_call_s": round(times[0], 2), "ms_per_step": round(ms, 1),
            "ms_per_row_step": round(ms / rows, 2)}


def main(argv=None) -> list[dict]:
    from training.utils.model import load_causal_lm, load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--modes", nargs="+", default=["dynamic", "static", "compiled"],
                    choices=("dynamic", "static", "compiled"))
    ap.add_argument("--rows", nargs="+", type=int, default=[16])
    ap.add_argument("--prompt-len", type=int, default=60)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    tok = load_tokenizer(a.model, padding_side="left")
    out = []
    for mode in a.modes:
        model = load_causal_lm(a.model, tok).eval()          # a fresh model: no compiled forward carried over
        for rows in a.rows:
            r = step_ms(model, tok, mode, rows, a.prompt_len, a.new_tokens, a.reps)
            print(f"{mode:9s} {rows:3d} rows: {r['ms_per_step']:7.1f} ms a step, {r['ms_per_row_step']:6.2f} ms a row "
                  f"(first call {r['first_call_s']} s)", flush=True)
            out.append(r)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
