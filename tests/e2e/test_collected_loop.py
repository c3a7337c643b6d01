"""The loop from use to a better model on tiny, in one test: a server collects (``--collect --compare``), people
chat through the ``openai`` client and give thumbs and pair verdicts over HTTP, ``train.py --from-collected`` trains
stages 2 and 3 on them into a new version folder, the server reloads it, and what it serves is the new weights'."""
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin-key-0123456789"
PROMPTS = ["Name a colour.", "Say a number.", "Write one word.", "Name an animal.", "Say hello.", "Name a city."]


def _sft(path: Path) -> str:
    from training.utils.model import load_causal_lm, load_tokenizer

    tok = load_tokenizer("tiny")
    load_causal_lm("tiny", tok, seed=3).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _wait(what, until, server, limit=120.0):
    t0 = time.time()
    while not until():
        assert time.time() - t0 < limit and server.poll() is None, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_serve_collect_label_train_reload(tmp_path):
    from openai import OpenAI

    from applications.chat_engine import ChatEngine, Sampling
    from applications.reload import weights_version

    sft, col, out = _sft(tmp_path / "sft"), tmp_path / "collected", tmp_path / "out"
    (tmp_path / "admin.key").write_text(ADMIN + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(ROOT / "chat.py"), "--model", sft, "--template", "plain", "--serve",
                               "--port", str(port), "--collect", str(col), "--compare", "--admin-key-file",
                               str(tmp_path / "admin.key")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, timeout=60)
    try:
        def up():
            try:
                return http.get("/health").status_code == 200
            except httpx.HTTPError:
                return False
        _wait("the server", up, server)
        assert http.get("/health").json()["collecting"] is True
        client = OpenAI(base_url=url + "/v1", api_key="unused", timeout=60)
        served = client.models.list().data[0]
        ids = []
        for p in PROMPTS:          # 2. people chat
            r = client.chat.completions.create(model=served.id, messages=[{"role": "user", "content": p}],
                                               max_tokens=8, temperature=1.0)
            ids.append(f"{r.id}:0")
        _wait("the collected records", lambda: len(_lines(col / "conversations.jsonl")) == len(PROMPTS), server)
        for k, answer_id in enumerate(ids):      # 3. thumbs on every answer, and a verdict on every pair
            r = http.post("/v1/feedback", json={"id": answer_id, "rating": "up" if k % 2 == 0 else "down"})
            assert r.status_code == 200, r.text
        _wait("the compared answers", lambda: len(_lines(col / "comparisons.jsonl")) >= 3, server)
        verdicts = 0
        while True:
            item = http.get("/label/api/next", headers={"X-Label-Session": "ana"}).json()
            if item["finished"]:
                break
            r = http.post("/label/api/verdict", headers={"X-Label-Session": "ana"},
                          json={"id": item["id"], "choice": "left" if verdicts % 2 else "right"})
            assert r.status_code == 200, r.text
            verdicts += 1
        assert verdicts >= 3 and len(_lines(col / "comparisons.labels.jsonl")) == verdicts

        run = subprocess.run([sys.executable, str(ROOT / "train.py"), "--actor-model", "tiny", "--sft-model", sft,
                              "--from-collected", str(col), "--output-dir", str(out)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)     # 4. train on what was collected
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        version = out / "collected" / "v1"
        made = json.loads((version / "collected.json").read_text())
        assert made["labels"] == {"verdicts": verdicts, "thumbs": len(PROMPTS), "pairs": verdicts}  # no prompt twice
        assert made["starts_from"] == sft
        # tiny passes nothing: the new version is judged not distinguishable from the model it started from
        assert f"=== version {version}: not distinguishable from the model it started from, +0.0 points over sft" \
            in run.stdout
        logs = out / "logs" / "latest"
        step2, step3 = (logs / "step2.log").read_text(), (logs / "step3.log").read_text()
        assert f"human labels {col}: {verdicts} verdicts, {len(PROMPTS)} thumbs" in step2
        assert f"pointwise term: {len(PROMPTS)} labelled answers (mean label 0.50)" in step2
        assert f"{col / 'conversations.jsonl'}: {len(PROMPTS)} distinct prompts" in step3
        actor = version / "step3-models" / "tiny" / "actor"
        assert (actor / "config.json").is_file() and (version / "report.json").is_file()
        assert not (out / "report.json").exists()          # a version keeps its report; nothing above it is touched

        r = http.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}, json={"model": str(actor)})
        assert r.status_code == 200, r.text               # 5. reload
        offline = ChatEngine(str(actor), template="plain")
        new_version = weights_version(offline.model)
        assert r.json()["version"] == new_version != r.json()["previous"] == served.version
        assert client.models.list().data[0].version == new_version
        ask = [{"role": "user", "content": "Name a colour."}]
        got = client.chat.completions.create(model=served.id, messages=ask, max_tokens=8, temperature=0)
        assert got.choices[0].message.content == offline.reply(ask, 8, Sampling(greedy=True)).text   # 6.
        _wait("the record of the new answer", lambda: len(_lines(col / "conversations.jsonl")) == len(PROMPTS) + 1,
              server)
        assert _lines(col / "conversations.jsonl")[-1]["version"] == new_version
    finally:
        http.close()
        server.kill()
        server.wait(30)
