"""Run logging: training.log, metrics.jsonl, TensorBoard events, progress bars and PNG curves."""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Optional

from .distributed import is_main

FMT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(output_dir: Optional[str] = None) -> logging.Logger:
    """Root logger to stderr (rank 0: INFO, others: WARNING) and, on rank 0, to training.log."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_speedchat", False):
            root.removeHandler(h)
    root.setLevel(logging.INFO if is_main() else logging.WARNING)
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(logging.Formatter(FMT))
    sh._speedchat = True
    root.addHandler(sh)
    if output_dir and is_main():
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(Path(output_dir) / "training.log")
        fh.setFormatter(logging.Formatter(FMT))
        fh._speedchat = True
        root.addHandler(fh)
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed", "datasets", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger("speedchat")


class MetricsWriter:
    """metrics.jsonl + TensorBoard (+ samples.jsonl: one sampled answer per RL iteration), rank 0 only."""

    def __init__(self, output_dir: str, tensorboard: bool = True, tensorboard_path: str = "", keep: bool = False):
        self.active = is_main()
        self.path = Path(output_dir) / "metrics.jsonl"
        self.samples = Path(output_dir) / "samples.jsonl"
        self.tb = None
        self.t0 = time.time()
        if self.active:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not (keep and self.path.is_file()):
                self.path.write_text("")
                self.samples.unlink(missing_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(tensorboard_path or str(Path(output_dir) / "tensorboard"))

    def rewind(self, step: int) -> None:
        """Resumed at ``step``: drop the records of later steps (they are about to be redone)."""
        if not self.active:
            return
        for path in (self.path, self.samples):
            if path.is_file():
                lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
                kept = [ln for ln in lines if json.loads(ln)["step"] <= step]
                path.write_text("".join(ln + "\n" for ln in kept))

    def sample(self, step: int, record: dict) -> None:
        """One sampled rollout of ``step`` (prompt, answer, reward, the row's other columns)."""
        if self.active:
            with open(self.samples, "a") as fh:
                fh.write(json.dumps({"step": step, **record}) + "\n")

    def log(self, step: int, split: str, metrics: dict) -> None:
        if not self.active:
            return
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        rec = {"step": step, "split": split, "time": round(time.time() - self.t0, 3), **clean}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in clean.items():
                if math.isfinite(v):
                    self.tb.add_scalar(f"{split}/{k}", v, step)
            self.tb.flush()

    def close(self, plots: bool = True) -> list[str]:
        if not self.active:
            return []
        if self.tb is not None:
            self.tb.close()
        return plot_metrics(self.path, self.path.parent) if plots else []


def read_metrics(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_metrics(metrics_path, out_dir) -> list[str]:
    """One PNG per split with a panel per metric logged at two steps or more (a single evaluation is a
    figure, not a curve: none is drawn); returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_metrics(metrics_path)
    written = []
    for split in sorted({r["split"] for r in recs} - {"time"}):     # "time": one row of loop seconds
        rows = [r for r in recs if r["split"] == split]
        names = sorted({k for r in rows for k in r} - {"step", "split", "time"})
        names = [k for k in names if sum(k in r for r in rows) > 1]      # one point is not a curve
        panels: dict[str, list[str]] = {}        # "curriculum/lower", "curriculum/math": one panel, a line each
        for k in names:
            panels.setdefault(k.split("/")[0] if "/" in k else k, []).append(k)
        keys = list(panels)
        if not keys:
            continue
        cols = min(3, len(keys))
        nrows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.2 * nrows), squeeze=False)
        for ax, k in zip(axes.flat, keys):
            for name in panels[k]:
                pts = [(r["step"], r[name]) for r in rows if name in r]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 30 else None,
                        label=name.split("/", 1)[1] if "/" in name else None)
            if len(panels[k]) > 1 or "/" in panels[k][0]:
                ax.legend(fontsize=6)
            ax.set_title(k)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        fig.suptitle(f"{split} metrics")
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        out = Path(out_dir) / f"{split}_curves.png"
        fig.savefig(out, dpi=80)
        plt.close(fig)
        written.append(str(out))
    return written
