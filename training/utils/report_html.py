"""``report.html``: the closing report of a ``train.py`` run as one self-contained page.

The figures table (pass-rate, reward-model score, KL per model; wall time per stage), the per-task
pass-rates, every stage's training curves (PNG files embedded as data URIs: nothing is fetched)
and, side by side, each model's greedy answer to the same held-out prompts, marked pass / fail by
the checker. Written from ``report.json`` and ``answers.json``; open it in any browser.
"""
from __future__ import annotations

import base64
import html
import time
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.pass { background: #e8f6e8; } td.fail { background: #fbeaea; }
.verdict { font-weight: bold; font-size: 0.85em; } td.pass .verdict { color: #1d7a1d; }
td.fail .verdict { color: #b02a2a; } pre { white-space: pre-wrap; margin: 0; font-size: 0.9em; }
figure { display: inline-block; margin: 0 1em 1em 0; } figcaption { font-size: 0.8em; color: #555; }
img { max-width: 36em; border: 1px solid #ddd; }
"""


def _num(x, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else "-"


def _table(head: list[str], rows: list[list[str]], numeric_from: int = 1, cls: str = "") -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{th}</tr>{body}</table>'


def figures_section(report: dict) -> str:
    rates, fresh = report.get("pass_rate", {}), report.get("fresh_pass_rate", {})
    rm, kl = report.get("rm_score", {}), report.get("kl_to_reference", {})
    head = ["model", f"pass-rate ({report.get('held_out_prompts', '?')} held-out prompts)"]
    head += [f"fresh ({report.get('fresh_prompts')})"] if fresh else []
    head += ["mean RM score", "KL to reference"]
    rows = []
    for name, rate in rates.items():
        row = [html.escape(name), _num(rate)] + ([_num(fresh.get(name))] if fresh else [])
        rows.append(row + [_num(rm.get(name)), _num(kl.get(name))])
    out = "<h2>Figures</h2>" + _table(head, rows, cls="figures")
    facts = []
    if "reward_model" in report:
        rm = report["reward_model"]
        facts.append(("reward model: held-out pair accuracy", _num(rm["held_out_pair_accuracy"])))
        for key, what in (("on_policy_auc", "reward model: on-policy AUC (sampled answers, any prompts)"),
                          ("on_policy_within_prompt_auc", "reward model: on-policy AUC within a prompt"),
                          ("labels", "labels spent on policy comparisons"), ("policy_pairs", "policy pairs trained on")):
            if rm.get(key) is not None:
                facts.append((what, _num(rm[key], 3 if "auc" in key else 0)))
    for key, what in (("reward_trend", "stage-3 training reward"),
                      ("gold_trend", "stage-3 judge verdict of the rollouts (pass-rate)"),
                      ("agreement_trend", "stage-3 reward vs judge on the rollouts (AUC within a prompt)")):
        trend = report.get(key)
        if trend:
            facts.append((f"{what}, first 3 -> last 3 iterations", f"{_num(trend['first3'])} -> {_num(trend['last3'])}"))
    refresh = report.get("reward_refresh")
    if refresh:
        facts.append(("reward model refreshed in stage 3 (iterated RLHF): refreshes, labels, pairs",
                      f"{refresh['refreshes']}, {refresh['labels']}, {refresh['pairs']}"))
        if "labels_total" in report.get("reward_model", {}):
            facts.append(("labels spent in all (stage 2 + stage 3)", _num(report["reward_model"]["labels_total"], 0)))
    for step, s in report.get("stage_seconds", {}).items():
        facts.append((f"stage {step} wall time (s)", _num(s, 0)))
    for what, s in report.get("seconds", {}).items():
        facts.append((f"{what.replace('_', ' ')} (s)", _num(s, 0)))
    if facts:
        out += _table(["", "value"], [[html.escape(k), v] for k, v in facts], cls="facts")
    per_task = report.get("per_task", {})
    if per_task:
        tasks = sorted({t for r in per_task.values() for t in r})
        rows = [[html.escape(m)] + [_num(r.get(t), 2) for t in tasks] for m, r in per_task.items()]
        out += "<h2>Pass-rate per task</h2>" + _table(["model"] + tasks, rows, cls="per-task")
    return out


W, H, L, T = 560, 220, 50, 15          # the proxy-and-gold chart: plot box width, height, left and top margins


def _polyline(xs: list[float], ys: list[float], x0: float, x1: float, lo: float, hi: float, colour: str) -> str:
    span, yspan = (x1 - x0) or 1.0, (hi - lo) or 1.0
    pts = [(L + (x - x0) / span * W, T + H - (y - lo) / yspan * H) for x, y in zip(xs, ys)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in pts)
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>{dots}'


def proxy_gold_section(report: dict) -> str:
    """The stage-3 reward (the proxy: the reward model's score) and the judge's verdict of the same
    rollouts (the gold) over the iterations, on one chart with an axis each (Gao et al., 2022)."""
    algo = next((k for k, v in report.items() if isinstance(v, dict) and "proxy_vs_gold" in v), None)
    if algo is None:
        return ""
    d = report[algo]["proxy_vs_gold"]
    xs, rw, gold = d["iterations"], d["reward"], d["gold"]
    if not xs:
        return ""
    lo, hi = min(rw), max(rw)
    pad = (hi - lo) * 0.1 or 0.5
    lo, hi = lo - pad, hi + pad
    glo, ghi = (0.0, 1.0) if all(0.0 <= g <= 1.0 for g in gold) else (min(gold), max(gold) or 1.0)
    gold_name = "judge pass-rate of the rollouts" if d["gold_name"] == "rollout_pass_rate" else "judge's mean verdict"
    ticks = "".join(f'<text x="{L - 6}" y="{T + H - f * H + 4:.0f}" text-anchor="end" font-size="10" fill="#1f5fbf">'
                    f"{lo + f * (hi - lo):.2f}</text>"
                    f'<text x="{L + W + 6}" y="{T + H - f * H + 4:.0f}" font-size="10" fill="#c0392b">'
                    f"{glo + f * (ghi - glo):.2f}</text>" for f in (0.0, 0.5, 1.0))
    xt = "".join(f'<text x="{L + (x - xs[0]) / ((xs[-1] - xs[0]) or 1) * W:.0f}" y="{T + H + 16}" font-size="10" '
                 f'text-anchor="middle">{x}</text>' for x in xs)
    svg = (f'<svg width="{W + 2 * L + 20}" height="{H + 50}" class="proxy-gold">'
           f'<rect x="{L}" y="{T}" width="{W}" height="{H}" fill="none" stroke="#999"/>{ticks}{xt}'
           f"{_polyline(xs, rw, xs[0], xs[-1], lo, hi, '#1f5fbf')}{_polyline(xs, gold, xs[0], xs[-1], glo, ghi, '#c0392b')}"
           f'<text x="{L + W / 2}" y="{T + H + 32}" font-size="11" text-anchor="middle">stage-3 iteration</text></svg>')
    agree = [a for a in d.get("agreement", []) if a is not None]
    note = (f"; the reward ranked two rollouts as the judge did {sum(agree) / len(agree):.2f} of the time (mean over "
            f"{len(agree)} iterations)" if agree else "")
    return (f"<h2>Proxy and gold over stage 3</h2><p><span style='color:#1f5fbf'>&#9632; training reward (the "
            f"proxy, left axis)</span> &nbsp; <span style='color:#c0392b'>&#9632; {gold_name} (the gold, right axis; "
            f"it never rewards)</span>{note}. A reward that rises while the gold falls is over-optimisation.</p>{svg}")


def curves_section(plots: list[str]) -> str:
    figs = []
    for p in plots:
        f = Path(p)
        if not f.is_file():
            continue
        data = base64.b64encode(f.read_bytes()).decode()
        label = f"{f.parent.name}/{f.name}"
        figs.append(f'<figure><img alt="{html.escape(label)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(label)}</figcaption></figure>")
    return "<h2>Training curves</h2>" + ("".join(figs) if figs else "<p>no curves were written</p>")


def answers_section(answers: dict[str, list[dict]], limit: int = 0) -> str:
    models = list(answers)
    if not models:
        return ""
    n = len(answers[models[0]]) if not limit else min(limit, len(answers[models[0]]))
    rows = []
    for i in range(n):
        cells = [f"<td><pre>{html.escape(answers[models[0]][i]['prompt'])}</pre></td>"]
        for m in models:
            a = answers[m][i]
            ok = bool(a["pass"])
            cells.append(f'<td class="{"pass" if ok else "fail"}"><span class="verdict">{"pass" if ok else "fail"}'
                         f"</span><pre>{html.escape(a['answer'])}</pre></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["prompt"] + models)
    return (f"<h2>Answers side by side ({n} held-out prompts, greedy, judged by the checker)</h2>"
            f'<table class="answers"><tr>{head}</tr>{"".join(rows)}</table>')


def write_report_html(report: dict, answers: dict[str, list[dict]], path: str | Path) -> Path:
    """Write the page (atomically: a temporary file renamed into place) and return its path."""
    path = Path(path)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>RLHF run report</title>"
            f"<style>{STYLE}</style></head><body><h1>RLHF run report</h1>"
            f"<p>written {time.strftime('%Y-%m-%d %H:%M')}; models: "
            f"{html.escape(', '.join(f'{k}: {v}' for k, v in report.get('models', {}).items()))}</p>"
            f"{figures_section(report)}{proxy_gold_section(report)}{curves_section(report.get('plots', []))}{answers_section(answers)}"
            f"</body></html>\n")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
