"""The training loop shared by the supervised stages (SFT, reward model, DPO).

A stage supplies ``step_fn(engine, batch) -> (loss, metrics)`` and ``eval_fn() -> metrics``; the
loop does gradient accumulation through DeepSpeed, progress bars, periodic evaluation and metric
logging.
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


def run(engine, loader: DataLoader, step_fn: Callable, eval_fn: Callable, cfg: Config, writer,
        total_steps: int, desc: str = "train") -> dict:
    """Train for ``total_steps`` optimizer steps; returns the last eval metrics.

    With ``--save_interval`` it checkpoints every N steps; with ``--resume`` it continues from the
    newest intact checkpoint (same data order, RNG states, optimizer and scheduler)."""
    from tqdm.auto import tqdm

    o, lg, ck = cfg.optim, cfg.log, cfg.ckpt
    step, epoch, skip = 0, 0, 0
    resume = checkpoint.find_resume(cfg)
    faults_seen = 0
    if resume is not None:
        st = checkpoint.load(resume, {"model": engine})
        step, epoch, skip, faults_seen = st["step"], st["epoch"], st["batches_done"], st.get("nonfinite", 0)
        writer.rewind(step)
    elif lg.eval_at_start:
        ev = eval_fn()
        writer.log(0, "eval", ev)
        log.info("step 0 eval: %s", _fmt(ev))
    guard = NonFinite(ck.max_nonfinite, lg.output_dir, faults_seen)
    fault = faults.parse(ck.fault)
    bar = tqdm(total=total_steps, initial=step, desc=desc, disable=lg.disable_tqdm or not is_main(), dynamic_ncols=True)
    micro, acc, acc_n, t0, tokens, attempts = 0, {}, 0, time.time(), 0, 0
    t_loop, eval_s = time.time(), 0.0
    while step < total_steps:
        loader.sampler.set_epoch(epoch)
        for bi, batch in enumerate(loader):
            if bi < skip:            # resumed: these batches were trained on before the checkpoint
                continue
            engine.train()
            batch = to_device(batch, engine.device)
            loss, metrics = step_fn(engine, batch)
            attempts += 1
            if fault and fault.nan(attempts):
                loss = loss * float("nan")
            if lg.print_loss:
                log.info("epoch %d, step %d, rank %d, loss = %.6g", epoch, step, rank(), loss.item())
            if not guard.check(loss, "loss", step + 1):
                continue
            engine.backward(loss)
            engine.step()
            tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
            for k, v in {"loss": loss.detach().float().item(), **metrics}.items():
                acc[k] = acc.get(k, 0.0) + float(v)
            acc_n += 1
            micro += 1
            if micro % o.gradient_accumulation_steps:
                continue
            step += 1
            if step % lg.log_interval == 0 or step == total_steps:
                sums = all_reduce_sum([acc[k] for k in acc] + [acc_n, tokens])
                n, tok = sums[-2], sums[-1]
                m = {k: s / n for k, s in zip(acc, sums)}
                dt = time.time() - t0
                m.update(lr=engine.get_lr()[0], tokens_per_s=tok / dt if dt > 0 else 0.0,
                         nonfinite_skipped=guard.total)
                writer.log(step, "train", m)
                bar.set_postfix({k: f"{v:.4g}" for k, v in m.items() if k in ("loss", "acc", "lr")})
                acc, acc_n, t0, tokens = {}, 0, time.time(), 0
            bar.update(1)
            if lg.eval_interval and step % lg.eval_interval == 0 and step < total_steps:
                t_ev = time.time()
                ev = eval_fn()
                writer.log(step, "eval", ev)
                log.info("step %d eval: %s", step, _fmt(ev))
                eval_s += time.time() - t_ev
                t0 += time.time() - t_ev         # tokens_per_s counts training time only
            if ck.save_interval and step % ck.save_interval == 0 and step < total_steps:
                checkpoint.save(lg.output_dir, step, {"model": engine},
                                {"epoch": epoch, "batches_done": bi + 1, "nonfinite": guard.total}, ck.keep_checkpoints)
            if fault:
                fault.after_step(step)
            if step >= total_steps:
                break
        skip = 0
        epoch += 1
    bar.close()
    writer.log(step, "time", {"train_loop_s": time.time() - t_loop - eval_s, "eval_s": eval_s})
    if not lg.final_eval:
        return {}
    ev = eval_fn()
    writer.log(step, "eval", ev)
    log.info("step %d (final) eval: %s", step, _fmt(ev))
    return ev


def _fmt(m: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in m.items())
