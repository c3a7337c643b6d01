"""The loop from use to a better model, measured: the bundled checker stands in for the people.

    python scripts/bench/collected_loop.py                         # SmolLM2, 128 prompts, seeds 1 2 3
    python scripts/bench/collected_loop.py --model tiny --prompts 8 --seeds 1 -- --max_steps 2

1. The SFT model (``train.py --step 1`` into ``<out>``, once; reused when it is there) is served by
   ``chat.py --serve --collect DIR --compare --admin-key-file``, a real server in its own process.
2. "Users" ask ``--prompts`` distinct prompts of the bundled training split (never an evaluation prompt), four
   at a time through the ``openai`` client, sampled at ``--temperature``; the server samples a second answer to
   each, off the request path, and queues the pairs that differ for labelling.
3. The checker labels as people would, through the server's own endpoints: a thumb on every served answer
   (up when it passes) and a verdict on every queued pair at ``/label`` (the passing answer; a tie when both
   pass or both fail). Every label is counted.
4. ``train.py --from-collected DIR --output-dir <out> --seed S``: stage 2 trains a reward model from the SFT model
   on those labels, stage 3 PPO through it on the collected prompts mixed with the bundled ones; it writes
   ``<out>/collected/vN`` and its closing evaluation (the ``test`` set: the served model before, SFT, against the
   new one, with a paired-bootstrap interval per gain).
5. The server reloads the new actor (``POST /admin/reload``); the script checks the version it reports is the new
   weights' hash and that a greedy answer equals the new model's offline one.

Per seed the figures go to ``<out>/loop-seed<S>.json``; over the seeds, mean / min and a 95% interval to
``<out>/loop.json`` and ``<out>/loop.md``. Arguments after ``--`` go to train.py.
"""
from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
import httpx  # noqa: E402

from learning import figures, markdown, summarise  # noqa: E402
from training.utils.data import checker  # noqa: E402

ADMIN = "loop-admin-key-0123456789"


def user_prompts(n: int, seed: int) -> list[str]:
    """``n`` distinct prompts of the bundled training split (single user turns)."""
    from training.utils.data.bundled import train_eval

    train, _ = train_eval(4000, 0)
    texts = sorted({r["prompt"] for r in train if isinstance(r["prompt"], str)})
    return random.Random(seed).sample(texts, n)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def serve(model: str, col: Path, key: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(ROOT / "chat.py"), "--model", model, "--serve", "--port", str(port),
                             "--collect", str(col), "--compare", "--admin-key-file", str(key)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() - t0 > 300:
            sys.exit(f"the server did not start; its log: {log}")
        time.sleep(0.5)


def collect(url: str, prompts: list[str], max_tokens: int, temperature: float, col: Path) -> dict:
    """Ask every prompt (four clients), thumb every answer by the checker, wait for the second answers, and give
    a verdict on every pair at /label."""
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="unused", timeout=600)
    model = client.models.list().data[0]
    t0 = time.time()

    def ask(p):
        r = client.chat.completions.create(model=model.id, messages=[{"role": "user", "content": p}],
                                           max_tokens=max_tokens, temperature=temperature)
        return f"{r.id}:0", r.choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, prompts))
    asked = time.time() - t0
    up = 0
    for p, (answer_id, text) in zip(prompts, answers):
        ok = checker.check(p, text)
        up += ok
        httpx.post(url + "/v1/feedback", json={"id": answer_id, "rating": "up" if ok else "down"},
                   timeout=60).raise_for_status()
    last, still = -1, time.time()          # the second answers come when no request waits
    while time.time() - still < 30:
        n = len(lines(col / "comparisons.jsonl"))
        if n != last:
            last, still = n, time.time()
        time.sleep(2)
    verdicts = {"left": 0, "right": 0, "tie": 0}
    h = {"X-Label-Session": "checker"}
    while True:
        item = httpx.get(url + "/label/api/next", headers=h, timeout=60).json()
        if item["finished"]:
            break
        left, right = checker.check(item["prompt"], item["left"]), checker.check(item["prompt"], item["right"])
        choice = "tie" if left == right else ("left" if left else "right")
        verdicts[choice] += 1
        httpx.post(url + "/label/api/verdict", headers=h, json={"id": item["id"], "choice": choice},
                   timeout=60).raise_for_status()
    return {"prompts": len(prompts), "served_pass_rate": up / len(prompts), "thumbs": len(prompts), "thumbs_up": up,
            "pairs_queued": last, "verdicts": sum(verdicts.values()), "verdicts_tie": verdicts["tie"],
            "labels": len(prompts) + sum(verdicts.values()), "ask_seconds": round(asked, 1),
            "collect_seconds": round(time.time() - t0, 1)}


def reload_and_check(url: str, actor: Path) -> dict:
    from applications.chat_engine import ChatEngine, Sampling
    from applications.reload import weights_version

    r = httpx.post(url + "/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}, json={"model": str(actor)},
                   timeout=600)
    r.raise_for_status()
    offline = ChatEngine(str(actor))
    want = weights_version(offline.model)
    ask = [{"role": "user", "content": "Write one sentence about rivers. Use only lowercase letters."}]
    got = httpx.post(url + "/v1/chat/completions", timeout=600,
                     json={"messages": ask, "max_tokens": 32, "temperature": 0}).json()["choices"][0]["message"]
    same = got["content"] == offline.reply(ask, 32, Sampling(greedy=True)).text
    if r.json()["version"] != want or not same:
        sys.exit(f"the reloaded server does not serve {actor}: version {r.json()['version']} (want {want}), greedy "
                 f"answer equal: {same}")
    return {"version": want, "previous": r.json()["previous"]}


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="the actor model (train.py --actor-model)")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--out", default=str(ROOT / "bench-out" / "collected-loop"))
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train = [sys.executable, str(ROOT / "train.py"), "--actor-model", a.model, "--output-dir", str(out)]
    sft = out / "actor-models" / Path(a.model).name
    if not (sft / "summary.json").is_file():
        print(f"##### the served model: {' '.join(train + ['--step', '1'])}", flush=True)
        subprocess.run(train + ["--step", "1", *extra], check=True, cwd=ROOT)
    key = out / "admin.key"
    key.write_text(ADMIN + "\n")
    per_seed, results = {}, {}
    for s in a.seeds:
        col = out / f"collected-seed{s}"
        done = col / "collection.json"          # a finished collection is trained on again, not collected again
        if (col / "conversations.jsonl").exists() and not done.is_file():
            sys.exit(f"{col} holds an unfinished collection: move it away")
        proc, url = serve(str(sft), col, key, out / f"server-seed{s}.log")
        try:
            if done.is_file():
                got = json.loads(done.read_text())
            else:
                got = collect(url, user_prompts(a.prompts, s), a.max_tokens, a.temperature, col)
                done.write_text(json.dumps(got, indent=2) + "\n")
            print(f"##### seed {s}: collected {json.dumps(got)}", flush=True)
            before = {p.name for p in (out / "collected").glob("v*")} if (out / "collected").is_dir() else set()
            t0 = time.time()
            subprocess.run(train + ["--from-collected", str(col), "--seed", str(s), *extra], check=True, cwd=ROOT)
            got["train_seconds"] = round(time.time() - t0, 1)
            (version,) = [p for p in (out / "collected").glob("v*") if p.name not in before]
            report = json.loads((version / "report.json").read_text())
            actor = Path(report["models"]["ppo"])
            got.update(reload_and_check(url, actor), version_dir=str(version))
        finally:
            proc.kill()
            proc.wait(30)
        results[s] = {"collection": got, "report": report}
        (out / f"loop-seed{s}.json").write_text(json.dumps(results[s], indent=2) + "\n")
        per_seed[s] = {**figures(report, got["train_seconds"]),
                       **{f"collection.{k}": float(v) for k, v in got.items() if isinstance(v, (int, float))}}
        print(f"##### seed {s}: pass-rate {report['pass_rate']}, gain {report['gain']}", flush=True)
    summary = summarise(per_seed)
    command = "python scripts/bench/collected_loop.py " + " ".join(argv + (["--"] + extra if extra else []))
    prompts = results[a.seeds[0]]["report"].get("held_out_prompts")
    md = markdown("collected-loop", summary, per_seed, command.strip(), prompts, "test")
    md += "\n| figure | mean | min | max |\n|---|---|---|---|\n" + "".join(
        f"| {k} | {v['mean']:.3f} | {v['min']:.3f} | {v['max']:.3f} |\n" for k, v in summary.items()
        if k.startswith("collection."))
    (out / "loop.json").write_text(json.dumps({"command": command, "summary": summary, "per_seed": per_seed},
                                              indent=2) + "\n")
    (out / "loop.md").write_text(md)
    print("\n" + md)
    return {"summary": summary, "per_seed": per_seed}


if __name__ == "__main__":
    main()
