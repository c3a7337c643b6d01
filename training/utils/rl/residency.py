"""Idle models out of device memory (``--offload_idle_models``).

Stage 3 holds up to four models, but each phase uses only some of them: generation the actor,
scoring the reward model, the experience forwards the reference and the critic, the updates the
actor and the critic. With the option on, ``Residency.use(*names)`` keeps the named models on the
device and parks every other registered one in CPU memory:

- a DeepSpeed training engine with a ZeRO optimizer that supports it (ZeRO-1/2; ZeRO-3 with
  DeepSpeed's FusedAdam, i.e. on a GPU): DeepSpeed's own ``offload_states`` / ``reload_states``
  (parameters, gradients and optimizer state);
- a ZeRO-0 training engine with a plain torch optimizer, and a frozen model that is a plain module:
  every parameter, buffer and optimizer-state tensor copied to CPU memory and back;
- a frozen ZeRO-3 engine, or a ZeRO-3 engine whose optimizer DeepSpeed cannot offload (CPU
  training): left in place (already partitioned across ranks), said once in the log.

The actor is never parked. Training results are identical with and without the option (tested).
On a CPU-only machine parking copies within the same memory: the option only pays on a GPU.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch

log = logging.getLogger("speedchat")


def _copy_to(module: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer], dev: torch.device) -> None:
    """Move ``module``'s parameters and buffers, and ``optimizer``'s state tensors, to ``dev`` (a copy,
    so that the old storage is freed; parameter objects stay the same, so optimizer keys stay valid)."""
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            t.data = t.data.to(dev, copy=True)
    if optimizer is not None:
        for st in optimizer.state.values():
            for k, v in st.items():
                if torch.is_tensor(v):
                    st[k] = v.to(dev, copy=True)


class Residency:
    """``use(*names)``: the named models resident, the other registered ones parked (when enabled)."""

    def __init__(self, enabled: bool, home: torch.device, models: dict[str, Any]):
        self.enabled, self.home, self.park = enabled, home, torch.device("cpu")
        self.models = {k: m for k, m in models.items() if m is not None}
        self.parked: set[str] = set()
        self.how = {k: self._kind(k, m) for k, m in self.models.items()} if enabled else {}
        self.guards: dict[str, Any] = {}
        if self.how:
            log.info("offload_idle_models: %s", ", ".join(f"{k} {v}" for k, v in self.how.items()))

    def _kind(self, name: str, m) -> str:
        opt = getattr(m, "optimizer", None)
        stage = m.zero_optimization_stage() if hasattr(m, "zero_optimization_stage") else 0
        if hasattr(m, "offload_states") and opt is not None and hasattr(opt, "offload_states"):
            fused = type(getattr(opt, "optimizer", None)).__name__ == "FusedAdam"
            if stage in (1, 2) or fused:
                return "deepspeed"
        engine = hasattr(m, "zero_optimization_stage")
        if engine and opt is not None and not isinstance(opt, torch.optim.Optimizer) and stage == 0:
            log.info("offload_idle_models: %s stays in place (its %s is not a plain torch optimizer)", name,
                     type(opt).__name__)
            return "resident"
        if stage == 3 or (engine and opt is None):
            log.info("offload_idle_models: %s stays in place (ZeRO-3 partitioned%s)", name,
                     "" if opt is None else "; DeepSpeed offloads ZeRO-3 optimizer state with FusedAdam only")
            return "resident"
        return "copy"

    def _move(self, name: str, out: bool) -> None:
        m, how = self.models[name], self.how[name]
        forward = m.module if hasattr(m, "module") else m
        if out:          # a forward through a parked model is a bug in the phase bookkeeping: say which
            def refuse(*_):
                raise RuntimeError(f"offload_idle_models: {name} was used while parked")
            self.guards[name] = forward.register_forward_pre_hook(refuse)
        else:
            self.guards.pop(name).remove()
        if how == "deepspeed":
            if out:
                m.offload_states(pin_memory=self.home.type == "cuda")
            else:
                m.reload_states()
        elif how == "copy":
            module = m.module if hasattr(m, "module") and hasattr(m, "optimizer") else m
            _copy_to(module, getattr(m, "optimizer", None) if module is not m else None,
                     self.park if out else self.home)

    def use(self, *names: str) -> None:
        """Make the models ``names`` resident ("reward" also matches "reward:0", "reward:1", ...) and park
        the others."""
        if not self.enabled:
            return
        for name in self.how:
            wanted = name in names or name.split(":")[0] in names
            if wanted and name in self.parked:
                self._move(name, out=False)
                self.parked.discard(name)
            elif not wanted and name not in self.parked and self.how[name] != "resident":
                self._move(name, out=True)
                self.parked.add(name)
