"""The labelling store and its API: verdicts appended as stage 2's human-label JSONL (read back by
read_human_labels), the shown order undone, a restart offering only what has no verdict, two people
never given the same comparison, bad requests 4xx changing nothing, verdicts attributed to their key."""


import pytest


@pytest.mark.slow
def test_chat_py_stops_on_a_missing_comparisons_file_before_loading_a_model(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(root / "chat.py"), "--model", "no-such-model", "--serve", "--label",
                        str(tmp_path / "todo.jsonl")], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--label: labelling:" in r.stderr and "todo.jsonl: no such file" in r.stderr


@pytest.mark.slow
def test_kill_9_in_a_burst_of_verdicts_loses_at_most_the_ones_in_flight(tmp_path):
    """chat.py --serve --label with four people answering as fast as they can; the server is SIGKILLed after 30
    verdicts came back. Every verdict that came back is in the file, and at most the four in flight more; the
    file opens again (a torn last line cut off) and stage 2 reads it."""
    import json
    import signal
    import socket
    import subprocess
    import sys
    import threading
    import time
    from pathlib import Path

    import httpx

    from applications.labelling import LabelStore
    from training.utils.labels.human import read_human_labels

    root = Path(__file__).resolve().parents[2]
    rows = [{"id": str(i), "prompt": f"Say {i}.", "answer_a": f"a{i}", "answer_b": f"b{i}"} for i in range(400)]
    c, v = tmp_path / "c.jsonl", tmp_path / "v.jsonl"
    c.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(root / "chat.py"), "--model", "tiny", "--serve", "--port",
                               str(port), "--label", str(c), "--label-output", str(v)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() - t0 < 120 and server.poll() is None, "the server did not start"
            time.sleep(0.2)
        acked, lock, stop = [], threading.Lock(), threading.Event()

        def person(k):
            h = {"X-Label-Session": f"p{k}"}
            with httpx.Client(base_url=url, timeout=10) as client:
                while not stop.is_set():
                    try:
                        item = client.get("/label/api/next", headers=h).json()
                        r = client.post("/label/api/verdict", headers=h, json={"id": item["id"], "choice": "left"})
                    except httpx.HTTPError:
                        return                      # the server is gone
                    if r.status_code == 200:
                        with lock:
                            acked.append(item["id"])
                            if len(acked) >= 30:
                                stop.set()

        people = [threading.Thread(target=person, args=(k,)) for k in range(4)]
        for p in people:
            p.start()
        stop.wait(120)
        server.send_signal(signal.SIGKILL)
        server.wait(30)
        for p in people:
            p.join(30)
    finally:
        if server.poll() is None:
            server.kill()
    store = LabelStore(str(c), str(v))           # a restart: a torn last line would be cut off here
    written = [json.loads(x)["id"] for x in v.read_text().splitlines()]
    assert set(acked) <= set(written) and len(written) <= len(acked) + 4
    assert store.progress()["done"] == len(written)
    store.close()
    pairs, counts, _ = read_human_labels(v)
    assert counts["rows"] == len(written) and len(pairs) == len(written)
