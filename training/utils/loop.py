"""The training loop shared by the supervised stages (SFT, reward model, DPO).

A stage supplies ``step_fn(engine, batch) -> (loss, metrics)`` and ``eval_fn() -> metrics``; the
loop does gradient accumulation through DeepSpeed, progress bars, periodic evaluation and metric
logging.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import torch
from torch.utils.data import DataLoader, DistributedSampler

from .config import Config
from .distributed import all_reduce_sum, is_main, rank, world_size

log = logging.getLogger(__name__)


def make_loader(ds, batch_size: int, collate, shuffle: bool, seed: int, num_workers: int = 0) -> DataLoader:
    sampler = DistributedSampler(ds, num_replicas=world_size(), rank=rank(), shuffle=shuffle, seed=seed,
                                 drop_last=False)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers)


def to_device(batch: dict, dev) -> dict:
    return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def run(engine, loader: DataLoader, step_fn: Callable, eval_fn: Callable, cfg: Config, writer,
        total_steps: int, desc: str = "train") -> dict:
    """Train for ``total_steps`` optimizer steps; returns the last eval metrics."""
    from tqdm.auto import tqdm

    o, lg = cfg.optim, cfg.log
    ev = eval_fn()
    writer.log(0, "eval", ev)
    log.info("step 0 eval: %s", _fmt(ev))
    bar = tqdm(total=total_steps, desc=desc, disable=lg.disable_tqdm or not is_main(), dynamic_ncols=True)
    step, micro, acc, acc_n, t0, tokens = 0, 0, {}, 0, time.time(), 0
    epoch = 0
    while step < total_steps:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            engine.train()
            batch = to_device(batch, engine.device)
            loss, metrics = step_fn(engine, batch)
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
                m.update(lr=engine.get_lr()[0], tokens_per_s=tok / dt if dt > 0 else 0.0)
                writer.log(step, "train", m)
                bar.set_postfix({k: f"{v:.4g}" for k, v in m.items() if k in ("loss", "acc", "lr")})
                acc, acc_n, t0, tokens = {}, 0, time.time(), 0
            bar.update(1)
            if lg.eval_interval and step % lg.eval_interval == 0 and step < total_steps:
                ev = eval_fn()
                writer.log(step, "eval", ev)
                log.info("step %d eval: %s", step, _fmt(ev))
            if step >= total_steps:
                break
        epoch += 1
    bar.close()
    ev = eval_fn()
    writer.log(step, "eval", ev)
    log.info("step %d (final) eval: %s", step, _fmt(ev))
    return ev


def _fmt(m: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in m.items())
