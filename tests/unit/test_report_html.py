"""report.html: figures, curves and answers from report.json / answers.json, self-contained."""

import base64
import re
from html.parser import HTMLParser

import pytest

from launch.report_html import write_report_html


class Cells(HTMLParser):
    """Text of every table cell, per table, and every <img> src."""

    def __init__(self):
        super().__init__()
        self.tables, self.imgs, self.links, self._cell = [], [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.imgs.append(a["src"])
        if "href" in a or (tag == "script" and "src" in a) or (tag == "link"):
            self.links.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_report_page_has_the_figures_the_curves_and_the_answers(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png = tmp_path / "sft" / "train_curves.png"
    png.parent.mkdir()
    plt.plot([3, 2, 1])
    plt.savefig(png)
    plt.close()
    import json

    dirs = {}
    for step, rows in {"1": [("train", 1, {"loss": 2.0}), ("train", 2, {"loss": 1.5}), ("train", 3, {"loss": 1.0}),
                             ("eval", 3, {"loss": 1.2})],                       # one eval point: no eval line
                       "2": [("train", 1, {"acc": 0.5, "margin": 0.1})],        # one point: no chart
                       "3": [("train", 1, {"kl_k3": 0.0}), ("train", 2, {"kl_k3": 0.02}),
                             ("train", 3, {"kl_k3": 0.04})]}.items():
        d = tmp_path / f"stage{step}"
        d.mkdir()
        (d / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "split": sp, **m}) + "\n" for sp, i, m in rows))
        dirs[step] = str(d)
    report = {"pass_rate": {"base": 0.0104, "sft": 0.3542, "ppo": 0.4271}, "held_out_prompts": 2, "stage_dirs": dirs,
              "eval_set": "test", "pass_rate_ci": {"sft": [0.3, 0.41], "ppo": [0.37, 0.4812]},
              "gain": {"ppo": {"over": "sft", "gain": 0.0729, "lo": 0.0208, "hi": 0.125,
                               "per_task": {"lower": {"gain": 0.55, "lo": 0.4, "hi": 0.7}}}},
              "per_task_ci": {"ppo": {"lower": [0.5, 0.77]}}, "per_task_n": {"base": {"lower": 64}},
              "rm_score": {"base": -1.25, "sft": 0.5, "ppo": 0.93}, "kl_to_reference": {"sft": 0.0, "ppo": 0.52},
              "reward_model": {"held_out_pair_accuracy": 0.9453, "on_policy_auc": 0.9612, "synthetic_pairs": 1710,
                               "on_policy_within_prompt_auc": 0.8871, "labels": 384, "policy_pairs": 97},
              "stage_seconds": {"1": 201.4, "3": 299.6},
              "ppo": {"proxy_vs_gold": {"iterations": [1, 2, 3], "reward": [0.5, 1.0, 1.5], "gold": [0.25, 0.5, 0.75],
                                        "gold_name": "rollout_pass_rate", "agreement": [0.8, None, 0.9]}},
              "gold_trend": {"first3": 0.25, "last3": 0.75, "rising": True},
              "reward_trend": {"first3": 1.06, "last3": 1.46, "rising": True},
              "per_task": {"base": {"lower": 0.0}, "sft": {"lower": 0.09}, "ppo": {"lower": 0.64}},
              "plots": [str(png), str(tmp_path / "gone.png")], "models": {"sft": "out/sft"}}
    prompts = ["Write in lowercase: <b>Cats</b>", "Say hello & goodbye."]
    answers = {m: [{"prompt": p, "answer": f"{m} answer {i} <script>x</script>", "pass": (m == "ppo") == (i == 0)}
                   for i, p in enumerate(prompts)] for m in ("base", "sft", "ppo")}
    page = write_report_html(report, answers, tmp_path / "report.html").read_text()
    doc = Cells()
    doc.feed(page)
    figures, facts, per_task, side = doc.tables
    assert figures[0][:3] == ["model", "pass-rate (2 test prompts)", "95% interval"]
    assert figures[1:] == [["base", "0.010", "-", "-", "-", "-1.250", "-"],
                           ["sft", "0.354", "30.0 .. 41.0", "-", "-", "0.500", "0.000"],
                           ["ppo", "0.427", "37.0 .. 48.1", "+7.3 over sft", "+2.1 .. +12.5", "0.930", "0.520"]]
    assert ["reward model: held-out pair accuracy", "0.945"] in facts and ["stage 3 wall time (s)", "300"] in facts
    assert ["stage-3 training reward, first 3 -> last 3 iterations", "1.060 -> 1.460"] in facts
    assert ["reward model: on-policy AUC (sampled answers, any prompts)", "0.961"] in facts
    assert ["reward model: on-policy AUC within a prompt", "0.887"] in facts
    assert ["synthetic pairs in its training rows (the dataset's chosen / rejected)", "1710"] in facts
    assert ["labels spent on policy comparisons", "384"] in facts and ["policy pairs trained on", "97"] in facts
    assert [
        "stage-3 judge verdict of the rollouts (pass-rate), first 3 -> last 3 iterations",
        "0.250 -> 0.750",
    ] in facts
    # four charts at most, each from a series of two points or more: the SFT loss (its one eval point drawn as
    # no line), no reward-model chart (one point), proxy and gold, the KL
    assert re.findall(r'<svg [^>]*class="chart ([a-z-]+)"', page) == ["sft-loss", "proxy-gold", "kl"]
    lines = re.findall(r'<polyline fill="none" stroke="(#[0-9a-f]+)" stroke-width="2" points="([^"]+)"', page)
    assert [c for c, _ in lines] == ["#1f5fbf", "#1f5fbf", "#c0392b", "#1f5fbf"]
    # proxy and gold on one chart: the reward on its own axis (0.4 .. 1.6 padded), the pass-rate on 0 .. 1;
    # both rise in a straight line here, so each polyline's points are evenly spaced along the 720 x 260 box
    gold = [tuple(map(float, p.split(","))) for p in lines[2][1].split()]
    assert [x for x, _ in gold] == [56.0, 416.0, 776.0] and [y for _, y in gold] == [211.0, 146.0, 81.0]
    proxy = [tuple(map(float, p.split(","))) for p in lines[1][1].split()]
    assert [y for _, y in proxy] == [pytest.approx(276.0 - 260 * 0.1 / 1.2, abs=0.05), 146.0,
                                     pytest.approx(16 + 260 * 0.1 / 1.2, abs=0.05)]
    kl = [tuple(map(float, p.split(","))) for p in lines[3][1].split()]      # 0 .. 0.04: axis 0 .. 0.044, not below 0
    assert [y for _, y in kl] == [276.0, pytest.approx(276 - 260 * 0.02 / 0.044, abs=0.05),
                                  pytest.approx(276 - 260 * 0.04 / 0.044, abs=0.05)]
    assert "mean over 2 iterations" in page and "0.85 of the time" in page
    # every other metric: the stages' PNGs, in a section that starts collapsed, after the answers
    assert page.index('<details class="all-curves">') > page.index('class="answers"')
    assert per_task == [["model", "lower (64)"], ["base", "0.00"], ["sft", "0.09"], ["ppo", "0.6450.0 .. 77.0"],
                        ["gain of ppo over sft (points)", "+55.0+40.0 .. +70.0"]]
    assert side[0] == ["prompt", "base", "sft", "ppo"]
    assert side[1] == [prompts[0], "failbase answer 0 <script>x</script>", "failsft answer 0 <script>x</script>",
                       "passppo answer 0 <script>x</script>"]
    assert side[2][3] == "failppo answer 1 <script>x</script>" and side[2][1].startswith("pass")
    assert "<script>" not in page and "&lt;b&gt;Cats" in page          # answers are escaped, not run
    # the one existing curve is embedded byte for byte; nothing is fetched from elsewhere
    assert len(doc.imgs) == 1 and base64.b64decode(doc.imgs[0].split(",", 1)[1]) == png.read_bytes()
    assert doc.links == [] and not re.search(r"https?://", page)


def test_rl_figures_read_a_stage3_output_kl_k3_refreshes_and_trends(tmp_path):
    """rl_figures on a hand-written stage-3 output: the KL figure is the k3 estimate (a k1 mean of -0.07
    would read as a bug), the trends are means of the first and last 3 iterations, the refreshes carried."""
    import json

    from launch.report import rl_figures

    rows = [{"split": "train", "step": i, "reward": r, "kl": -0.07, "kl_k3": 0.02 * i, "rollout_pass_rate": g,
             "reward_judge_auc": a} for i, (r, g, a) in enumerate(
        [(1.0, 0.2, 0.5), (2.0, 0.3, None), (3.0, 0.1, 0.7), (4.0, 0.5, 0.9), (5.0, 0.4, 0.6)], start=1)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    refresh = {"labeller": "checker", "labels": 128, "pairs": 40, "refreshes": 2, "interval": 2, "steps_per_refresh": 8}
    (tmp_path / "summary.json").write_text(
        json.dumps({"first_eval": None, "final_eval": {}, "reward_refresh": refresh})
    )
    f = rl_figures(tmp_path)
    assert f["final_kl"] == pytest.approx(0.10)
    assert f["reward_trend"] == {"first3": pytest.approx(2.0), "last3": pytest.approx(4.0), "rising": True}
    assert f["gold_trend"]["first3"] == pytest.approx(0.2) and f["gold_trend"]["last3"] == pytest.approx(1.0 / 3)
    assert f["agreement_trend"] == {"first3": pytest.approx(0.7), "last3": pytest.approx((0.7 + 0.9 + 0.6) / 3)}
    assert f["reward_refresh"] == refresh and f["proxy_vs_gold"]["agreement"][1] is None


def test_multi_turn_answers_show_their_calls_and_results():
    from launch.report_html import answers_section

    conv = [{"role": "user", "content": "Compute 17 * 23."},
            {"role": "assistant", "content": '<tool_call>{"name": "calculator"}</tool_call>'},
            {"role": "tool", "name": "calculator", "content": "391 <b>"},
            {"role": "assistant", "content": "391"}]
    calls = [{"name": "calculator", "arguments": {"expression": "17 * 23"}, "status": "ok", "content": "391 <b>"}]
    answers = {"sft": [{"prompt": "Compute 17 * 23.", "answer": "391", "pass": True, "conversation": conv,
                        "tool_calls": calls}],
               "grpo": [{"prompt": "Compute 17 * 23.", "answer": "390", "pass": False}]}
    page = answers_section(answers)
    assert page.count('<details class="conversation">') == 1 and "2 earlier messages" in page
    assert '<div class="tool">calculator (ok): 391 &lt;b&gt;</div>' in page
    assert "assistant: &lt;tool_call&gt;" in page and "<pre>390</pre>" in page
