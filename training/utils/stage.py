"""What every stage does first and last: distributed set-up, seeding, logging, config dump."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .config import Config
from .distributed import barrier, device, init_distributed, is_main, set_seed, world_size
from .logging import MetricsWriter, setup_logging


class StageRun:
    """Context of one stage run: ``with StageRun(cfg, 'sft') as run: ...``."""

    def __init__(self, cfg: Config, name: str):
        self.cfg, self.name = cfg, name

    def __enter__(self) -> "StageRun":
        init_distributed()
        cfg = self.cfg
        self.out = Path(cfg.log.output_dir)
        if is_main():
            self.out.mkdir(parents=True, exist_ok=True)
        barrier()
        self.log = setup_logging(str(self.out))
        set_seed(cfg.optim.seed)
        self.device = device()
        self.writer = MetricsWriter(str(self.out), cfg.log.enable_tensorboard, cfg.log.tensorboard_path)
        if is_main():
            cfg.save(self.out / "config.json")
        self.log.info("stage %s: %d rank(s) on %s, output %s", self.name, world_size(), self.device, self.out)
        self.t0 = time.time()
        return self

    def summary(self, **fields) -> None:
        """Write <output_dir>/summary.json (rank 0)."""
        if is_main():
            rec = {"stage": self.name, "seconds": round(time.time() - self.t0, 2), **fields}
            (self.out / "summary.json").write_text(json.dumps(rec, indent=2) + "\n")

    def __exit__(self, exc_type, exc, tb):
        plots = self.writer.close(plots=self.cfg.log.plots and exc_type is None)
        if plots:
            self.log.info("curves: %s", ", ".join(plots))
        if exc_type is not None:
            logging.getLogger("speedchat").error("stage %s failed: %s", self.name, exc)
        return False
