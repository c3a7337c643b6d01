"""``report.html``: the closing report of a ``train.py`` run as one self-contained page.

The figures table (pass-rate and gain with 95% intervals, reward-model score, KL per model; wall
time per stage), four large
charts (the SFT loss, the reward model's pair accuracy and margin, the stage-3 reward beside the
judge's verdict of the same rollouts, the KL to the reference), the per-task pass-rates, each model's
greedy answer to the same evaluation prompts side by side (marked pass / fail by the checker), and
every other logged metric in a collapsed section (the stages' PNGs as data URIs: nothing is fetched).
Written from ``report.json``, ``answers.json`` and the stages' ``metrics.jsonl``; open it in any browser.
"""
from __future__ import annotations

import base64
import html
import time
from pathlib import Path

from inference.intervals import interval_text

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.pass { background: #e8f6e8; } td.fail { background: #fbeaea; }
.verdict { font-weight: bold; font-size: 0.85em; } td.pass .verdict { color: #1d7a1d; }
td.fail .verdict { color: #b02a2a; } pre { white-space: pre-wrap; margin: 0; font-size: 0.9em; }
.conversation { font-size: 0.85em; color: #555; } .conversation .tool { color: #225e8a; }
figure { display: inline-block; margin: 0 1em 1em 0; } figcaption { font-size: 0.8em; color: #555; }
img { max-width: 36em; border: 1px solid #ddd; }
h3 { margin: 1.2em 0 0.2em; } details.all-curves { margin: 1.5em 0; } summary { cursor: pointer; font-weight: bold; }
"""


def _num(x, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else "-"


def _table(head: list[str], rows: list[list[str]], numeric_from: int = 1, cls: str = "") -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{th}</tr>{body}</table>'


def figures_section(report: dict) -> str:
    rates, ci, gains = report.get("pass_rate", {}), report.get("pass_rate_ci", {}), report.get("gain", {})
    rm, kl = report.get("rm_score", {}), report.get("kl_to_reference", {})
    where = f"{report.get('held_out_prompts', '?')} {report.get('eval_set', 'held-out')} prompts"
    rm_where = f" (first {report['rm_scored_prompts']} prompts)" if "rm_scored_prompts" in report else ""
    head = ["model", f"pass-rate ({where})", "95% interval", "gain (points)", "95% interval",
            f"mean RM score{rm_where}", "KL to reference"]
    rows = []
    for name, rate in rates.items():
        g = gains.get(name)
        rows.append(
            [
                html.escape(name),
                _num(rate),
                interval_text(*ci[name]) if name in ci else "-",
                f"{100 * g['gain']:+.1f} over {html.escape(g['over'])}" if g else "-",
                interval_text(g["lo"], g["hi"], signed=True) if g else "-",
                _num(rm.get(name)),
                _num(kl.get(name)),
            ]
        )
    out = "<h2>Figures</h2>" + _table(head, rows, cls="figures")
    facts = []
    if "reward_model" in report:
        rm = report["reward_model"]
        facts.append(("reward model: held-out pair accuracy", _num(rm["held_out_pair_accuracy"])))
        if "synthetic_pairs" in rm:
            facts.append(("synthetic pairs in its training rows (the dataset's chosen / rejected)",
                          _num(rm["synthetic_pairs"], 0)))
        for key, what in (
            ("on_policy_auc", "reward model: on-policy AUC (sampled answers, any prompts)"),
            ("on_policy_within_prompt_auc", "reward model: on-policy AUC within a prompt"),
            ("labels", "labels spent on policy comparisons"),
            ("policy_pairs", "policy pairs trained on"),
        ):
            if rm.get(key) is not None:
                facts.append((what, _num(rm[key], 3 if "auc" in key else 0)))
    for key, what in (("reward_trend", "stage-3 training reward"),
                      ("gold_trend", "stage-3 judge verdict of the rollouts (pass-rate)"),
                      ("agreement_trend", "stage-3 reward vs judge on the rollouts (AUC within a prompt)")):
        trend = report.get(key)
        if trend:
            facts.append(
                (f"{what}, first 3 -> last 3 iterations", f"{_num(trend['first3'])} -> {_num(trend['last3'])}")
            )
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
    return out


def per_task_section(report: dict) -> str:
    """Pass-rate per task with its 95% interval, and each model's gain per task with its paired interval."""
    per_task, ci, gains = report.get("per_task", {}), report.get("per_task_ci", {}), report.get("gain", {})
    if not per_task:
        return ""
    tasks = sorted({t for r in per_task.values() for t in r})
    counts = report.get("per_task_n", {})
    n = next(iter(counts.values()), {})
    head = ["model"] + [f"{t} ({n[t]})" if t in n else t for t in tasks]
    rows = [[html.escape(m)] + [f"{_num(r.get(t), 2)}<br><small>{interval_text(*ci[m][t])}</small>"
                                if t in ci.get(m, {}) else _num(r.get(t), 2) for t in tasks]
            for m, r in per_task.items()]
    for m, g in gains.items():
        pt = g.get("per_task", {})
        rows.append([f"gain of {html.escape(m)} over {html.escape(g['over'])} (points)"]
                    + [f"{100 * pt[t]['gain']:+.1f}<br><small>{interval_text(pt[t]['lo'], pt[t]['hi'], signed=True)}"
                       f"</small>" if t in pt else "-" for t in tasks])
    return ("<h2>Pass-rate per task</h2><p>Each cell: the rate, and below it the 95% interval in points (bootstrap "
            "over prompts; gains: paired bootstrap).</p>" + _table(head, rows, cls="per-task"))


W, H, L, T = 720, 260, 56, 16          # every chart: plot box width, height, left and top margins
LEFT, RIGHT = "#1f5fbf", "#c0392b"     # the colours of the left-axis and right-axis series


def _polyline(xs: list[float], ys: list[float], x0: float, x1: float, lo: float, hi: float, colour: str) -> str:
    span, yspan = (x1 - x0) or 1.0, (hi - lo) or 1.0
    pts = [(L + (x - x0) / span * W, T + H - (y - lo) / yspan * H) for x, y in zip(xs, ys)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in pts)
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>{dots}'


def _range(ys: list[float], unit: bool) -> tuple[float, float]:
    """The axis range of ``ys``: 0 .. 1 for a rate (``unit``), else their span padded by a tenth."""
    if unit and all(0.0 <= y <= 1.0 for y in ys):
        return 0.0, 1.0
    lo, hi = min(ys), max(ys)
    pad = (hi - lo) * 0.1 or 0.5
    return (lo - pad if lo < 0 else max(lo - pad, 0.0)), hi + pad     # a series never below 0 keeps its axis there


def chart(cls: str, title: str, left: tuple, right: tuple | None = None, xlabel: str = "step",
          note: str = "") -> str:
    """One large line chart: ``left`` = (label, xs, ys, unit) on the left axis, ``right`` likewise on a
    second axis; a series of fewer than two points draws nothing (the chart is left out)."""
    series = [(left, LEFT, L - 6, "end")] + (
        [(right, RIGHT, L + W + 6, "start")] if right and len(right[1]) > 1 else []
    )
    if len(left[1]) < 2:
        return ""
    xs_all = [x for (_, xs, _, _), *_ in series for x in xs]
    x0, x1 = min(xs_all), max(xs_all)
    body, legend = "", []
    for (label, xs, ys, unit), colour, tx, anchor in series:
        lo, hi = _range(ys, unit)
        body += "".join(f'<text x="{tx}" y="{T + H - f * H + 4:.0f}" text-anchor="{anchor}" font-size="11" '
                        f'fill="{colour}">{lo + f * (hi - lo):.3g}</text>' for f in (0.0, 0.5, 1.0))
        body += _polyline(xs, ys, x0, x1, lo, hi, colour)
        legend.append(f"<span style='color:{colour}'>&#9632; {html.escape(label)}</span>")
    body += "".join(f'<text x="{L + f * W:.0f}" y="{T + H + 16}" font-size="11" text-anchor="middle">'
                    f"{x0 + f * (x1 - x0):.4g}</text>" for f in (0.0, 0.5, 1.0))
    svg = (
        f'<svg width="{W + 2 * L + 20}" height="{H + 58}" class="chart {cls}">'
        f'<rect x="{L}" y="{T}" width="{W}" height="{H}" fill="none" stroke="#999"/>{body}'
        f'<text x="{L + W / 2}" y="{T + H + 34}" font-size="12" text-anchor="middle">{html.escape(xlabel)}</text></svg>'
    )
    return (f"<h3>{html.escape(title)}</h3><p>{' &nbsp; '.join(legend)}{(' ' + note) if note else ''}</p>{svg}")


def _series(rows: list[dict], split: str, key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if r.get("split") == split and isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _metrics(report: dict, step: str) -> list[dict]:
    from training.utils.logging import read_metrics

    d = report.get("stage_dirs", {}).get(step)
    f = Path(d) / "metrics.jsonl" if d else None
    return read_metrics(f) if f is not None and f.is_file() else []


def charts_section(report: dict) -> str:
    """The four charts that tell whether the run worked: the SFT loss, the reward model's accuracy and
    margin, the stage-3 reward with the judge's verdict of the same rollouts, the KL to the reference."""
    out = []
    sft = _metrics(report, "1")
    if sft:
        xs, ys = _series(sft, "train", "loss")
        ex, ey = _series(sft, "eval", "loss")
        out.append(chart("sft-loss", "Stage 1: SFT loss", ("training loss", xs, ys, False),
                         ("held-out loss", ex, ey, False) if len(ex) > 1 else None, "optimizer step"))
    rm = _metrics(report, "2")
    acc_key = next((k for k in ("acc", "reward_acc") if any(k in r for r in rm)), None)
    if acc_key:
        ax, ay = _series(rm, "train", acc_key)
        mx, my = _series(rm, "train", "margin")
        out.append(chart("rm-accuracy", "Stage 2: pair accuracy and margin", ("training pair accuracy", ax, ay, True),
                         ("margin (chosen - rejected score)", mx, my, False), "optimizer step"))
    algo = next((k for k, v in report.items() if isinstance(v, dict) and "proxy_vs_gold" in v), None)
    if algo is not None:
        d = report[algo]["proxy_vs_gold"]
        gold = "judge pass-rate of the rollouts" if d["gold_name"] == "rollout_pass_rate" else "judge's mean verdict"
        agree = [a for a in d.get("agreement", []) if a is not None]
        note = (f"(the gold never rewards; the reward ranked two rollouts as the judge did "
                f"{sum(agree) / len(agree):.2f} of the time, mean over {len(agree)} iterations). A reward that rises "
                f"while the gold falls is over-optimisation." if agree else
                "(the gold never rewards). A reward that rises while the gold falls is over-optimisation.")
        out.append(chart("proxy-gold", "Stage 3: training reward (the proxy) and the judge (the gold)",
                         ("training reward", d["iterations"], d["reward"], False),
                         (gold, d["iterations"], d["gold"], True), "stage-3 iteration", note))
    rl = _metrics(report, "3")
    kx, ky = _series(rl, "train", "kl_k3")
    if kx:
        out.append(chart("kl", "Stage 3: KL to the reference", ("KL per answer (k3 estimator, never negative)",
                                                                  kx, ky, False), None, "stage-3 iteration"))
    out = [c for c in out if c]
    return "<h2>How the run went</h2>" + "".join(out) if out else ""


def curves_section(plots: list[str]) -> str:
    """Every logged metric of every stage (each stage's PNG), in a section that starts collapsed."""
    figs = []
    for p in plots:
        f = Path(p)
        if not f.is_file():
            continue
        data = base64.b64encode(f.read_bytes()).decode()
        label = f"{f.parent.name}/{f.name}"
        figs.append(f'<figure><img alt="{html.escape(label)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(label)}</figcaption></figure>")
    return (f'<details class="all-curves"><summary>Every logged metric ({len(figs)} figure{"s" * (len(figs) != 1)}, '
            f'one per stage and split)</summary>{"".join(figs) if figs else "<p>no curves were written</p>"}</details>')


def _conversation(a: dict) -> str:
    """The turns before a multi-turn answer: each model turn and the tool's reply, with the call's status."""
    conv = a.get("conversation") or []
    turns = [m for m in conv[1:-1] if m["role"] != "system"] if len(conv) > 2 else []
    if not turns:
        return ""
    status = iter(c["status"] for c in a.get("tool_calls", []))
    lines = []
    for m in turns:
        if m["role"] == "tool":
            lines.append(f'<div class="tool">{html.escape(m.get("name", "tool"))} ({next(status, "?")}): '
                         f'{html.escape(m["content"])}</div>')
        else:
            lines.append(f'<div class="turn">{html.escape(m["role"])}: {html.escape(m["content"])}</div>')
    return f'<details class="conversation"><summary>{len(turns)} earlier messages</summary>{"".join(lines)}</details>'


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
                         f"</span>{_conversation(a)}<pre>{html.escape(a['answer'])}</pre></td>")
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
            f"{figures_section(report)}{charts_section(report)}{per_task_section(report)}{answers_section(answers)}"
            f"{curves_section(report.get('plots', []))}"
            f"</body></html>\n")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
