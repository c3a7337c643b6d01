"""What every stage does first and last: distributed set-up, seeding, logging, config dump."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from .config import Config, flat_settings, inert_flags
from .distributed import barrier, device, init_distributed, is_main, same_on_every_rank, set_seed, world_size
from .logging import MetricsWriter, setup_logging


def run_cli(main, argv) -> None:
    """A stage's command-line entry: a config or data error ends the process with one line naming the
    file, row, field or flag (exit 2), not a traceback per rank."""
    import sys

    from .config import ConfigError
    from .data.sources import DataError
    from .distributed import DistributedStartError

    try:
        main(argv)
    except (ConfigError, DataError) as e:
        if is_main():
            print(f"error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except DistributedStartError as e:      # every rank says it: rank 0 may be the one missing
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


class StageRun:
    """Context of one stage run: ``with StageRun(cfg, 'sft') as run: ...``."""

    def __init__(self, cfg: Config, name: str):
        self.cfg, self.name = cfg, name

    def models(self) -> dict:
        """{flag: model name} this stage loads, checked before anything starts."""
        m, p, r = self.cfg.model, self.cfg.rl, self.cfg.rewards
        out = {"--model_name_or_path": m.model_name_or_path, "--tokenizer_name_or_path": m.tokenizer_name_or_path}
        if self.name == "rl":       # stage 3 loads reward models and a critic
            from .reward_sources import needs_model

            for path in needs_model(r.reward):
                out[f"--reward model:{path}" if path else "--reward_model_name_or_path"] = \
                    path or r.reward_model_name_or_path
            out["--critic_model_name_or_path"] = p.critic.critic_model_name_or_path
        return {k: v for k, v in out.items() if v}

    def __enter__(self) -> "StageRun":
        from .model.loader import model_problem

        for flag, name in self.models().items():
            problem = model_problem(name, flag)
            if problem:
                raise SystemExit(problem)
        cfg = self.cfg
        self.out = Path(cfg.log.output_dir)
        if (self.out / "summary.json").is_file() and not (cfg.log.overwrite or cfg.ckpt.resume):
            raise SystemExit(f"{self.out} holds a finished run (summary.json): pass --overwrite to train again "
                             f"and replace its model, --resume to continue from its checkpoints, or choose "
                             f"another --output_dir")
        init_distributed(cfg.ds.dist_timeout)
        flat = flat_settings(cfg)
        flat.pop("ds.local_rank")
        flat.pop("ckpt.fault")          # the reliability tests kill one node of several
        same_on_every_rank("configuration", flat)
        if is_main():
            self.out.mkdir(parents=True, exist_ok=True)
        barrier()
        self.log = setup_logging(str(self.out))
        set_seed(cfg.optim.seed)
        self.device = device()
        self.writer = MetricsWriter(str(self.out), cfg.log.enable_tensorboard, cfg.log.tensorboard_path,
                                    keep=cfg.ckpt.resume)
        if is_main():
            cfg.save(self.out / "training_config.json")     # beside, not over, the model's config.json
        self.log.info("stage %s: %d rank(s) on %s, output %s", self.name, world_size(), self.device, self.out)
        for line in inert_flags(cfg):
            self.log.info("DeepSpeed-Chat flag %s", line)
        self.t0 = time.time()
        return self

    def tokenizer(self, padding_side: str = "right"):
        from .model import load_tokenizer

        m = self.cfg.model
        return load_tokenizer(m.tokenizer_name_or_path or m.model_name_or_path, m.trust_remote_code, padding_side)

    def phase_data(self, tok, phase: int):
        """(train, eval, stats) of data phase 1-3 through the cache, with the counts logged."""
        from .data import build_phase

        tools = ()
        if phase == 1 and self.cfg.tools.tools:        # stage 1 of a run with tools: prompts show them
            from .tools.spec import load_tools

            tools = tuple(t.schema for t in load_tools(self.cfg.tools.tools))
        train, evals, stats, cache = build_phase(self.cfg.data, tok, phase, self.cfg.optim.seed, is_main(), barrier,
                                                 tools)
        for split, st in stats.items():
            self.log.info("data phase %d %s: %d of %d rows kept; prompts truncated %d, answers truncated %d, "
                          "dropped %d (cache %s)", phase, split, st["kept"], st["rows"], st["prompt_truncated"],
                          st["answer_truncated"], st["dropped"], cache)
        return train, evals, stats

    def loaders(self, train_ds, eval_ds, collate, train_batch: int, eval_batch: int):
        """Shuffled training loader and ordered eval loader ([] when there is no eval data)."""
        from .loop import make_loader

        seed, workers = self.cfg.optim.seed, self.cfg.data.num_workers
        train = make_loader(train_ds, train_batch, collate, True, seed, workers)
        evals = make_loader(eval_ds, eval_batch, collate, False, seed) if len(eval_ds) else []
        return train, evals

    def setup(self, phase: int, load: Callable, collate: Callable, prepare: Callable = lambda m: m,
              augment: Callable = lambda tok, train: train) -> SimpleNamespace:
        """The start of stage 1, stage 2 and DPO: the tokenizer (right padding), the data of ``phase``,
        the model ``load(name, tok, ...)`` with LoRA, ``prepare(model)`` (the module the engine trains),
        the loaders with ``collate(tok)``, the optimizer-step count and the DeepSpeed engine;
        ``augment(tok, train_ds)`` may add training rows first (stage 2's policy comparisons).

        Returns a namespace: tok, model, train_ds, eval_ds, stats, train_loader, eval_loader, total, engine."""
        from .deepspeed_setup import build_train_engine, num_update_steps
        from .model import apply_lora

        cfg, o = self.cfg, self.cfg.optim
        tok = self.tokenizer("right")
        train_ds, eval_ds, stats = self.phase_data(tok, phase)
        train_ds = augment(tok, train_ds)
        model = apply_lora(load(cfg.model.model_name_or_path, tok, trust_remote_code=cfg.model.trust_remote_code,
                                dropout=cfg.model.dropout, seed=o.seed), cfg.lora)
        module = prepare(model)
        train_loader, eval_loader = self.loaders(train_ds, eval_ds, collate(tok), o.per_device_train_batch_size,
                                                 o.per_device_eval_batch_size)
        total = num_update_steps(len(train_loader), cfg.optim)
        return SimpleNamespace(tok=tok, model=model, train_ds=train_ds, eval_ds=eval_ds, stats=stats,
                               train_loader=train_loader, eval_loader=eval_loader, total=total,
                               engine=build_train_engine(module, cfg, total))

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
