"""The chat page and report.html in a real browser: headless Chromium (Debian's ``chromium``
package, installed by scripts/setup.sh) driven by Playwright."""

import os

import pytest

from applications.chat_engine import ChatEngine, Sampling
from applications.server import Background, create_app

CHROMIUM = "/usr/bin/chromium"


FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                reason=f"{CHROMIUM} missing: apt-get install -y chromium (scripts/setup.sh does)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.mark.slow
def test_chat_page_streams_the_greedy_answer_and_keeps_the_history(browser):
    engine = ChatEngine("tiny", template="plain")
    with Background(create_app(engine)) as url:
        page = browser.new_page()
        outside = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url) else None)
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('model').textContent === 'tiny'")
        page.fill("#temperature", "0")            # 0 = greedy on the server
        page.fill("#max_tokens", "12")
        history = []
        for k, question in enumerate(["What is 2 + 3?", "And 4 + 4?"]):
            page.fill("#question", question)
            page.press("#question", "Enter")
            page.wait_for_selector(f".msg.assistant >> nth={k}", state="attached")
            page.wait_for_function(f"document.querySelectorAll('.msg.assistant')[{k}].dataset.state === 'done'",
                                   timeout=120_000)
            shown = page.locator(".msg.assistant .text").nth(k).text_content()
            history.append({"role": "user", "content": question})
            expected = engine.reply(history, 12, Sampling(greedy=True)).text
            assert shown == expected                 # the second answer saw the first turn
            history.append({"role": "assistant", "content": expected})
        assert page.locator(".msg.user .text").all_text_contents() == ["What is 2 + 3?", "And 4 + 4?"]
        assert outside == []
        assert page.locator("#collecting").is_hidden() and page.locator(".thumbs").count() == 0   # not collecting
        page.close()


@pytest.mark.slow
def test_thumbs_on_a_collecting_server_become_labels_of_that_answer(browser, tmp_path):
    """chat.py --serve --collect: the page says the server records, each answer gets thumbs, and a click is the
    answer's label in feedback.jsonl, keyed by the recorded answer's id."""
    import json

    from applications.collect import Collector

    collect = Collector(str(tmp_path / "c"))
    with Background(create_app(ChatEngine("tiny", template="plain"), collect=collect)) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_function("!document.getElementById('collecting').hidden")
        page.fill("#temperature", "0")
        page.fill("#max_tokens", "8")
        for k, question in enumerate(["What is 2 + 3?", "Name a colour."]):
            page.fill("#question", question)
            page.press("#question", "Enter")
            page.wait_for_function(f"(document.querySelectorAll('.msg.assistant')[{k}] || {{}}).dataset?.state "
                                   "=== 'done'", timeout=120_000)
        page.locator(".msg.assistant").nth(1).locator(".thumbs button.down").click()
        page.wait_for_function("document.querySelectorAll('.thumbs')[1].dataset.rated === 'down'")
        page.locator(".msg.assistant").nth(1).locator(".thumbs button.up").click()        # rated once only
        shown = page.locator(".msg.assistant .text").nth(1).text_content()
        page.close()
    collect.close()
    labels = [json.loads(x) for x in (tmp_path / "c" / "feedback.jsonl").read_text().splitlines()]
    answers = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "c" / "conversations.jsonl").read_text()
               .splitlines()}
    assert len(answers) == 2 and [(x["rating"], x["label"]) for x in labels] == [("down", 0.0)]
    rated = answers[labels[0]["id"]]
    assert rated["answer"] == shown and rated["messages"][-1]["content"] == "Name a colour."


@pytest.mark.slow
def test_report_html_renders_its_table_and_images(browser, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from launch.report_html import write_report_html

    png = tmp_path / "rl" / "train_curves.png"
    png.parent.mkdir()
    plt.figure(figsize=(4, 3))
    plt.plot([1, 2, 4])
    plt.savefig(png, dpi=50)
    plt.close()
    import json

    dirs = {}
    for step, rows in {"1": [{"loss": 2.0 - i / 4} for i in range(4)],
                       "2": [{"acc": 0.5 + i / 10, "margin": i / 5} for i in range(4)],
                       "3": [{"kl_k3": i / 50} for i in range(4)]}.items():
        (tmp_path / step).mkdir()
        (tmp_path / step / "metrics.jsonl").write_text(
            "".join(json.dumps({"step": i + 1, "split": "train", **m}) + "\n" for i, m in enumerate(rows)))
        dirs[step] = str(tmp_path / step)
    report = {"pass_rate": {"base": 0.01, "sft": 0.354, "ppo": 0.385}, "held_out_prompts": 1, "plots": [str(png)],
              "kl_to_reference": {"sft": 0.0, "ppo": 0.06}, "stage_dirs": dirs,
              "ppo": {"proxy_vs_gold": {"iterations": [1, 2, 3], "reward": [0.1, 0.4, 0.3], "gold": [0.2, 0.3, 0.5],
                                        "gold_name": "rollout_pass_rate", "agreement": [0.7, 0.8, 0.9]}}}
    answers = {m: [{"prompt": "Write in lowercase: Rain", "answer": f"{m} says rain", "pass": m == "ppo"}]
               for m in ("base", "sft", "ppo")}
    path = write_report_html(report, answers, tmp_path / "report.html")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(path.as_uri())
    rows = page.locator("table.figures tr").all_inner_texts()
    assert [r.split("\t")[:2] for r in rows[1:]] == [["base", "0.010"], ["sft", "0.354"], ["ppo", "0.385"]]
    assert [r.split("\t")[-1] for r in rows[1:]] == ["-", "0.000", "0.060"]            # KL: never below 0
    # the four charts, large, in the order that tells the story; nothing else drawn above the answers
    charts = page.locator("svg.chart")
    assert [charts.nth(i).get_attribute("class") for i in range(4)] == [
        "chart sft-loss", "chart rm-accuracy", "chart proxy-gold", "chart kl"]
    assert all(charts.nth(i).bounding_box()["width"] >= 800 for i in range(4))
    assert page.locator("table.answers td.pass").all_inner_texts() == ["pass\nppo says rain"]
    # every other metric starts collapsed: its image is not shown until the section is opened
    assert page.locator("details.all-curves").get_attribute("open") is None
    assert not page.locator("details.all-curves img").is_visible()
    page.click("details.all-curves summary")
    assert page.locator("details.all-curves img").is_visible()
    size = page.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert size == [[True, 200, 150]]                # 4 x 3 inches at 50 dpi: the PNG decoded
    page.close()


@pytest.mark.slow
def test_chat_page_on_a_keyed_server_asks_for_the_key_then_answers(browser):
    from applications.auth import Keys

    engine = ChatEngine("tiny", template="plain")
    with Background(create_app(engine, keys=Keys({"ana": "secret-key-1"}))) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes(\"API key\")")
        page.fill("#temperature", "0")
        page.fill("#max_tokens", "8")
        page.fill("#question", "What is 2 + 3?")
        page.press("#question", "Enter")
        page.wait_for_function("document.querySelector('.msg.assistant').dataset.state === 'error'")
        assert "missing or wrong API key" in page.locator(".msg.assistant .text").text_content()
        page.fill("#api_key", "secret-key-1")
        page.dispatch_event("#api_key", "change")
        page.wait_for_function("document.getElementById('model').textContent === 'tiny'")
        page.fill("#question", "What is 2 + 3?")
        page.press("#question", "Enter")
        page.wait_for_function("document.querySelectorAll('.msg.assistant')[1].dataset.state === 'done'",
                               timeout=120_000)
        expected = engine.reply([{"role": "user", "content": "What is 2 + 3?"}], 8, Sampling(greedy=True)).text
        assert page.locator(".msg.assistant .text").nth(1).text_content() == expected
        page.close()


@pytest.mark.slow
def test_labelling_page_by_keyboard_survives_a_restart_and_keeps_two_people_apart(browser, tmp_path):
    import json

    from applications.labelling import LabelStore

    rows = [
        {"id": str(i), "prompt": f"Write {i}.", "answer_a": f"first {i}", "answer_b": f"second {i}"} for i in range(8)
    ]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "v.jsonl"
    engine = ChatEngine("tiny", template="plain")
    first = LabelStore(str(tmp_path / "c.jsonl"), str(out))
    with Background(create_app(engine, labels=first)) as url:
        page = browser.new_page()
        page.goto(url + "/label")
        for k, key in enumerate("12341"):
            page.wait_for_function(f"document.body.dataset.state === 'ready' && "
                                   f"document.getElementById('progress').textContent === '{k} / 8'")
            page.keyboard.press(key)
        page.wait_for_function("document.getElementById('progress').textContent === '5 / 8'")
        page.close()
    first.close()
    assert len(out.read_text().splitlines()) == 5                 # the server is gone; the verdicts are on disk
    prefs = [json.loads(x)["preference"] for x in out.read_text().splitlines()]
    assert prefs[2:4] == ["tie", "skip"] and set(prefs[:2] + prefs[4:]) <= {"a", "b"}
    with Background(create_app(engine, labels=LabelStore(str(tmp_path / "c.jsonl"), str(out)))) as url:
        one, two = browser.new_context(), browser.new_context()       # two people, two sessions
        p1, p2 = one.new_page(), two.new_page()
        for p in (p1, p2):
            p.goto(url + "/label")
            p.wait_for_function("document.body.dataset.state === 'ready'")
        assert p1.text_content("#progress") == "5 / 8"
        assert p1.text_content("#prompt") != p2.text_content("#prompt")
        p1.keyboard.press("1")
        p2.keyboard.press("2")
        for p in (p1, p2):          # whichever answered first saw 6 / 8
            p.wait_for_function("['6 / 8', '7 / 8'].includes(document.getElementById('progress').textContent) && "
                                "['ready', 'finished'].includes(document.body.dataset.state)")
        one.close()
        two.close()
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert len(ids) == 7 and len(set(ids)) == 7


@pytest.mark.slow
def test_chat_page_runs_the_servers_tools_and_shows_the_calls(browser):
    """chat.py --serve --tools calculator: the page offers the tool, the server runs the model's call, the page
    shows it with its result, and the model's next turn sees that result."""
    from support.server_tools import Scripted

    from training.utils.tools.environment import ToolEnvironment
    from training.utils.tools.executor import ToolExecutor
    from training.utils.tools.parsers import hermes
    from training.utils.tools.spec import load_tools

    engine = Scripted('<tool_call>\n{"name": "calculator", "arguments": {"expression": "6 * 7"}}\n</tool_call>')
    tools = ToolEnvironment(ToolExecutor(load_tools(["calculator"])), hermes)
    with Background(create_app(engine, tools=tools, max_turns=3)) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('tools').textContent === '(tools: calculator)'")
        page.fill("#question", "What is 6 * 7?")
        page.press("#question", "Enter")
        page.wait_for_function("document.getElementById('log').dataset.busy === 'no'", timeout=60_000)
        assert page.locator(".msg.tool .text").all_text_contents() == ['calculator({"expression": "6 * 7"}) ok: 42']
        assert page.locator(".msg.assistant .text").all_text_contents() == ["calls calculator", "It is sunny in Paris."]
        assert engine.prompts[1].endswith("<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\n")
        page.close()
