"""The one training loop of every stage.

``drive`` runs ``total`` steps (optimizer steps of SFT, the reward model and DPO; iterations of stage
3) from where a resumed run stopped: after each step it logs, evaluates every ``--eval_interval``,
checkpoints every ``--save_interval`` and runs the ``--fault`` hook; it evaluates at the start and the
end, and keeps the progress bar. A stage supplies the step, the evaluation and the checkpoint writer.
``run`` is the supervised stages' use of it: ``step_fn(engine, batch) -> (loss, metrics)`` on
micro-batches, gradient accumulation through DeepSpeed, non-finite losses skipped.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader, DistributedSampler

from . import checkpoint, faults
from .config import Config
from .distributed import all_reduce_sum, is_main, rank, world_size

log = logging.getLogger(__name__)


def make_loader(ds, batch_size: int, collate, shuffle: bool, seed: int, num_workers: int = 0) -> DataLoader:
    sampler = DistributedSampler(ds, num_replicas=world_size(), rank=rank(), shuffle=shuffle, seed=seed,
                                 drop_last=False)
    # its own generator: starting an iterator draws a worker seed, which must not come from (and
    # shift) the global RNG stream that sampling and dropout use; resumed runs rely on that stream
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers,
                      generator=gen)


def to_device(batch: dict, dev) -> dict:
    return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class NumericFault(RuntimeError):
    """Too many non-finite losses or rewards in a row."""


def all_finite(x: torch.Tensor) -> bool:
    """True when ``x`` is finite on every rank (all ranks take the same skip decision)."""
    bad = float(not bool(torch.isfinite(x.detach()).all()))
    if world_size() > 1:
        bad = all_reduce_sum([bad])[0]
    return bad == 0


class NonFinite:
    """Counts skipped non-finite losses/rewards; stops the run after ``limit`` in a row."""

    def __init__(self, limit: int, output_dir: str, total: int = 0):
        self.limit, self.output_dir, self.total, self.streak = limit, output_dir, total, 0

    def check(self, x: torch.Tensor, what: str, step: Optional[int] = None) -> bool:
        """True when ``x`` is finite on every rank; otherwise the update is skipped and counted."""
        if all_finite(x):
            self.streak = 0
            return True
        self.skip(what, step)
        return False

    def skip(self, what: str, step: Optional[int] = None) -> None:
        self.total += 1
        self.streak += 1
        where = f" at step {step}" if step is not None else ""
        log.warning("non-finite %s%s: update skipped (%d in a row, %d in all)", what, where, self.streak, self.total)
        if self.streak >= self.limit:
            last = checkpoint.latest(self.output_dir)
            raise NumericFault(f"{self.streak} non-finite values in a row (last: {what}{where}); stopping. "
                               + (f"Last good checkpoint: {last} (resume with --resume after lowering the "
                                  "learning rate or fixing the data)" if last else
                                  "No checkpoint was written (set --save_interval)"))


def drive(cfg: Config, writer, *, total: int, start: int, step: Callable[[int], Optional[dict]],
          evaluate: Callable[[], dict], save: Callable[[int, Optional[dict]], None], desc: str,
          postfix: tuple[str, ...], first: Optional[dict] = None,
          fault: Optional[faults.Faults] = None) -> tuple[Optional[dict], dict]:
    """Steps ``start + 1 .. total``; returns (the step-0 evaluation, the final one; {} when off).

    ``step(n)`` trains step ``n`` and returns its metrics (None: nothing to log at ``n``), logged at
    every ``--log_interval``-th step and the last; ``save(n, first)`` writes the checkpoint of step
    ``n``; ``first`` is the step-0 evaluation of a resumed run; ``fault`` (``--fault``, parsed once by
    the stage) may kill the process after a step."""
    from tqdm.auto import tqdm

    lg, ck = cfg.log, cfg.ckpt
    if start == 0 and lg.eval_at_start:
        first = evaluate()
        writer.log(0, "eval", first)
        log.info("step 0 eval: %s", _fmt(first))
    bar = tqdm(total=total, initial=start, desc=desc, disable=lg.disable_tqdm or not is_main(), dynamic_ncols=True)
    t_loop, eval_s = time.time(), 0.0
    for n in range(start + 1, total + 1):
        m = step(n)
        if m is not None:
            if n % lg.log_interval == 0 or n == total:
                writer.log(n, "train", m)
            bar.set_postfix({k: f"{m[k]:.4g}" for k in postfix if k in m})
        bar.update(1)
        if lg.eval_interval and n % lg.eval_interval == 0 and n < total:
            t_ev = time.time()
            ev = evaluate()
            writer.log(n, "eval", ev)
            log.info("step %d eval: %s", n, _fmt(ev))
            eval_s += time.time() - t_ev
        if ck.save_interval and n % ck.save_interval == 0 and n < total:
            save(n, first)
        if fault:
            fault.after_step(n)
    bar.close()
    writer.log(total, "time", {"train_loop_s": time.time() - t_loop - eval_s, "eval_s": eval_s})
    if not lg.final_eval:
        return first, {}
    final = evaluate()
    writer.log(total, "eval", final)
    log.info("step %d (final) eval: %s", total, _fmt(final))
    return first, final


class SupervisedSteps:
    """The supervised stages' step: micro-batches of ``loader`` until ``gradient_accumulation_steps`` of
    them updated the model (a non-finite loss is skipped and counted, ``--max_nonfinite`` in a row stop
    the run); at logging steps the mean metrics since the last log, with tokens/s of training time."""

    def __init__(self, engine, loader: DataLoader, step_fn: Callable, cfg: Config, total: int,
                 fault: Optional[faults.Faults] = None):
        self.engine, self.loader, self.step_fn, self.cfg, self.total = engine, loader, step_fn, cfg, total
        self.epoch, self.batches_done, self.micro, self.attempts = 0, 0, 0, 0
        self.guard = NonFinite(cfg.ckpt.max_nonfinite, cfg.log.output_dir)
        self.fault = fault                                  # --fault nan_at: NaN losses for the tests
        self.acc, self.acc_n, self.tokens, self.busy = {}, 0, 0, 0.0
        self._batches = None

    def resume(self, writer) -> int:
        """The optimizer steps done by the newest intact checkpoint (0: none), its state restored."""
        d = checkpoint.find_resume(self.cfg)
        if d is None:
            return 0
        st = checkpoint.load(d, {"model": self.engine})
        self.epoch, self.batches_done, self.guard.total = st["epoch"], st["batches_done"], st.get("nonfinite", 0)
        writer.rewind(st["step"])
        return st["step"]

    def _next_batch(self):
        """The loader's batches, epoch after epoch, from ``batches_done`` of ``epoch`` on."""
        while True:
            self.loader.sampler.set_epoch(self.epoch)
            for bi, batch in enumerate(self.loader):
                if bi < self.batches_done:        # resumed: trained on before the checkpoint
                    continue
                self.batches_done = bi + 1
                yield batch
            self.epoch, self.batches_done = self.epoch + 1, 0

    def __call__(self, n: int) -> Optional[dict]:
        if self._batches is None:
            self._batches = self._next_batch()
        t0, engine, o, lg = time.time(), self.engine, self.cfg.optim, self.cfg.log
        while True:
            batch = next(self._batches)
            engine.train()
            batch = to_device(batch, engine.device)
            loss, metrics = self.step_fn(engine, batch)
            self.attempts += 1
            if self.fault and self.fault.nan(self.attempts):
                loss = loss * float("nan")
            if lg.print_loss:
                log.info("epoch %d, step %d, rank %d, loss = %.6g", self.epoch, n - 1, rank(), loss.item())
            if not self.guard.check(loss, "loss", n):
                continue
            engine.backward(loss)
            engine.step()
            self.tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
            for k, v in {"loss": loss.detach().float().item(), **metrics}.items():
                self.acc[k] = self.acc.get(k, 0.0) + float(v)
            self.acc_n += 1
            self.micro += 1
            if self.micro % o.gradient_accumulation_steps == 0:
                break
        self.busy += time.time() - t0
        if n % lg.log_interval and n != self.total:
            return None
        sums = all_reduce_sum([self.acc[k] for k in self.acc] + [self.acc_n, self.tokens])
        m = {k: s / sums[-2] for k, s in zip(self.acc, sums)}
        m.update(lr=engine.get_lr()[0], tokens_per_s=sums[-1] / self.busy if self.busy > 0 else 0.0,
                 nonfinite_skipped=self.guard.total)
        self.acc, self.acc_n, self.tokens, self.busy = {}, 0, 0, 0.0
        return m

    def save(self, n: int, first: Optional[dict] = None) -> None:
        checkpoint.save(self.cfg.log.output_dir, n, {"model": self.engine},
                        {"epoch": self.epoch, "batches_done": self.batches_done, "nonfinite": self.guard.total},
                        self.cfg.ckpt.keep_checkpoints)


def run(engine, loader: DataLoader, step_fn: Callable, eval_fn: Callable, cfg: Config, writer,
        total_steps: int, desc: str = "train") -> dict:
    """Train for ``total_steps`` optimizer steps; returns the last eval metrics.

    With ``--save_interval`` it checkpoints every N steps; with ``--resume`` it continues from the
    newest intact checkpoint (same data order, RNG states, optimizer and scheduler)."""
    fault = faults.parse(cfg.ckpt.fault)
    steps = SupervisedSteps(engine, loader, step_fn, cfg, total_steps, fault)
    start = steps.resume(writer)
    _, final = drive(cfg, writer, total=total_steps, start=start, step=steps, evaluate=eval_fn, save=steps.save,
                     desc=desc, postfix=("loss", "acc", "lr"), fault=fault)
    return final


def _fmt(m: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in m.items())
