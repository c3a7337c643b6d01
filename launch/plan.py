"""The plan of a pipeline run: the stage table, and what each stage of this run is.

``STAGES`` is the table: each stage's config owner, script, output folder and what it reads. ``Plan``
looks ``--algo`` and the run's models up once and answers everything ``train.py`` asks of a stage:
its spec, output folder, the model it starts from and its preset is chosen by, the stages it needs,
its command (launcher, script and flags), and which pass-through flags it takes.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from training.utils.algorithms import algorithm_spec

ROOT = Path(__file__).resolve().parents[1]
SFT_INIT = "sft"     # --reward-model default: start the reward model from the Stage 1 output


@dataclass(frozen=True)
class StageSpec:
    step: int
    owner: str          # the config owner (training.utils.config.STAGE_SECTIONS): sft, reward, dpo or rl
    script: str         # under training/
    folder: str         # under --output-dir
    what: str


SFT = StageSpec(
    1, "sft", "step1_supervised_finetuning/main.py", "actor-models", "the SFT model (--step 1, or --sft-model)"
)
REWARD = StageSpec(2, "reward", "step2_reward_model_finetuning/main.py", "reward-models", "the reward model (--step 2)")
DPO = StageSpec(2, "dpo", "step2_reward_model_finetuning/dpo_main.py", "actor-models", "the DPO model (--step 2)")
RL = StageSpec(3, "rl", "step3_rlhf_finetuning/main.py", "step3-models", "the RL model (--step 3)")
STAGES = {1: SFT, 2: REWARD, 3: RL}  # stage 2 is DPO for the offline algorithms


def model_tag(name: str) -> str:
    return Path(name.rstrip("/")).name.replace("/", "_") or "model"


class Plan:
    """What ``--algo`` and the run's models ask of the pipeline, looked up once: ``alg`` (its record in
    ``training.utils.algorithms``), ``offline`` (DPO-family losses replace stages 2 and 3), ``critic`` (PPO:
    stage 3 reads the reward model and trains a critic)."""

    def __init__(self, args):
        self.args, self.algo = args, args.algo
        self.alg = algorithm_spec(args.algo)
        self.offline, self.critic = self.alg.offline, self.alg.critic
        self.rm_from_sft = args.reward_model == SFT_INIT
        self.collected = getattr(args, "from_collected", None)
        # --from-collected: stages 2 and 3 write a new version folder, never over a model that may be served
        self.version = collected_version(Path(args.output_dir), getattr(args, "resume", False)) if self.collected \
            else None

    @property
    def default_steps(self) -> list[int]:
        return list(self.alg.stages)

    def spec(self, step: int) -> StageSpec:
        return DPO if step == 2 and self.offline else STAGES[step]

    def output(self, step: int) -> Path:
        a, out = self.args, Path(self.args.output_dir)
        if self.version is not None and step > 1:
            out = self.version
        if step == 2 and self.offline:
            return out / DPO.folder / (model_tag(a.actor_model) + f"-{a.algo}")
        model = a.reward_model if step == 2 and not self.rm_from_sft else a.actor_model
        suffix = f"-{a.algo}" if step == 3 and not self.critic else ""
        return out / STAGES[step].folder / (model_tag(model) + suffix)

    def sft_model(self) -> str:
        """What the later stages start from: ``--sft-model``, else the stage 1 output."""
        return self.args.sft_model or str(self.output(1))

    def preset_model(self, step: int) -> str:
        """The model a stage's preset is chosen by: the reward model's start for stage 2, else the actor
        (the SFT output has the actor's shape)."""
        a = self.args
        return a.reward_model if step == 2 and not self.offline and not self.rm_from_sft else a.actor_model

    def starts_from_sft(self, step: int) -> bool:
        return step == 3 or step == 2 and (self.offline or self.rm_from_sft)

    def needs(self, step: int) -> dict[int, str]:
        """{earlier stage: what it gives} that stage ``step`` reads."""
        out = {1: SFT.what} if not self.args.sft_model and self.starts_from_sft(step) else {}
        if step == 3 and self.critic:
            out[2] = REWARD.what
        return out

    def stage_args(self, step: int, presets: dict, extra: list[str]) -> list[str]:
        """The stage's flags: output, preset and config files, models, ZeRO stages, then ``extra``."""
        a = self.args
        flags = ["--output_dir", str(self.output(step)), "--config", str(presets[step][1]),
                 *([a.config] if a.config else [])]
        if self.starts_from_sft(step):
            sft = self.sft_model()
            flags += ["--model_name_or_path", sft, *(["--tokenizer_name_or_path", sft] if not a.sft_model else [])]
        else:
            flags += ["--model_name_or_path", self.preset_model(step)]
        flags += self.alg.stage_flags(step) + self.collected_flags(step)
        if step == 3:
            rm = self.output(2)
            if self.critic or (rm / "config.json").is_file() or 2 in (a.step or []) or self.collected:
                flags += ["--reward_model_name_or_path", str(rm)]
            if a.reward_zero_stage is not None:
                flags += [
                    "--critic_zero_stage",
                    str(a.reward_zero_stage),
                    "--reward_zero_stage",
                    str(a.reward_zero_stage),
                ]
        zero = a.reward_zero_stage if step == 2 and not self.offline else a.actor_zero_stage
        if zero is not None:
            flags += ["--zero_stage", str(zero)]
        if a.overwrite:
            flags += ["--overwrite"]
        return flags + extra

    def collected_flags(self, step: int) -> list[str]:
        """--from-collected DIR: stage 2 learns from everything people labelled there (verdicts, and thumbs through
        the pointwise term), stage 3 trains through that reward model on its prompts mixed in at --collected-mix."""
        if not self.collected:
            return []
        d = self.collected
        if step == 2:      # the thumbs train.py counted (check_collected): a file with none gives no pointwise term
            point = ["--pointwise_weight", "1.0"] if self.args.collected_counts["thumbs"] else []
            return ["--pairs_from_policy", "--labeller", f"human:{d}", *point]
        if step == 3:
            return ["--reward", "model", "--rl_only_data_path", f"collected:{d}", "--rl_only_mix",
                    str(self.args.collected_mix)]
        return []

    def command(self, step: int, presets: dict, extra: list[str]) -> list[str]:
        return launcher(self.args, step) + [str(ROOT / "training" / self.spec(step).script)] + \
            self.stage_args(step, presets, extra)

    def route(self, extra: list[str], steps) -> dict[int, list[str]]:
        """The pass-through flags of each stage in ``steps``: each flag goes to the stages that own it.
        Exits with one line on a flag that no stage knows or whose stages do not run."""
        from training.utils.arguments import build_parser
        from training.utils.config import STAGE_SECTIONS

        known = {name: set(build_parser(stage=name)._option_string_actions) for name in STAGE_SECTIONS}
        out: dict[int, list[str]] = {s: [] for s in steps}
        for group in flag_groups(extra):
            flag = group[0].split("=", 1)[0]
            if not flag.startswith("--"):
                sys.exit(f"unexpected argument {group[0]!r}: stage flags start with -- (see --help)")
            takers = [s for s in steps if flag in known[self.spec(s).owner]]
            if not takers:
                owners = sorted(name for name, flags in known.items() if flag in flags)
                if not owners:
                    sys.exit(f"unknown flag {flag}: not a flag of train.py or of any stage (train.py --help, or a "
                             f"stage's --help, lists them)")
                sys.exit(f"{flag} is a flag of the {'/'.join(owners)} stage, which this run does not include "
                         f"(--step {' '.join(map(str, steps))}, --algo {self.algo})")
            for s in takers:
                out[s] += group
        return out

    def preset(self, step: int, gpu: bool, shapes: dict):
        """(Preset, its YAML file, the model shape it was chosen by) of stage ``step``
        (``training.utils.presets``: measured, or DeepSpeed-Chat's by size and deployment)."""
        from training.utils.presets import choose, model_shape, preset_file

        name = self.preset_model(step)
        if name not in shapes:
            shapes[name] = model_shape(name) if name not in ("tiny", "tiny-opt") else None
        p, shape = choose(step, name, self.alg, self.args.deployment_type, gpu, shapes[name])
        return p, preset_file(p, self.args.output_dir, step), shape

    def describe(self, step: int, presets: dict, extra: list[str]) -> str:
        """The preset stage ``step`` starts from, why, and every resolved setting with where it came from
        (the preset, a --config file, a flag, or the default), the ones not at their defaults first."""
        from training.utils.arguments import explain

        p, path, shape = presets[step]
        why = f" for {self.preset_model(step)}: {shape.text()}" if shape else ""
        rows = [(name, value, "preset" if where == f"config file {path}" else where)
                for name, value, where in explain(self.stage_args(step, presets, extra), self.spec(step).owner)]
        rows.sort(key=lambda r: r[2] == "default")
        return "\n".join([f"  preset {p.name} ({p.source}){why}"] +
                         [f"    {name} = {value!r}  [{where}]" for name, value, where in rows])


def collected_version(out: Path, resume: bool) -> Path:
    """``<out>/collected/vN``: the next N, or with ``resume`` the last one (to finish it)."""
    root = out / "collected"
    done = sorted(int(p.name[1:]) for p in root.glob("v*") if p.name[1:].isdigit()) if root.is_dir() else []
    n = (done[-1] if resume and done else (done[-1] + 1 if done else 1))
    return root / f"v{n}"


def flag_groups(extra: list[str]) -> list[list[str]]:
    """``--a 1 --b x y --c`` -> [[--a, 1], [--b, x, y], [--c]] (``--a=1`` stays one token)."""
    groups: list[list[str]] = []
    for tok in extra:
        if tok.startswith("--") or not groups:
            groups.append([tok])
        else:
            groups[-1].append(tok)
    return groups


def no_ssh_settings(args) -> dict:
    """multi_node --no-ssh: this node's rank, the node count, the master address and port, and the
    hostfile every node's launcher reads (the given one, else one written for --num-nodes)."""
    env = os.environ
    hosts = []
    if Path(args.hostfile).is_file():
        hosts = [
            ln.split()[0]
            for ln in Path(args.hostfile).read_text().splitlines()
            if ln.strip() and not ln.startswith("#")
        ]
    nodes = args.num_nodes or (len(hosts) if hosts else int(env.get("SLURM_NNODES", "0")))
    rank = args.node_rank if args.node_rank is not None else int(env.get("NODE_RANK", env.get("SLURM_NODEID", "-1")))
    master = args.master_addr or env.get("MASTER_ADDR") or (hosts[0] if hosts else "")
    if nodes < 1:
        sys.exit("multi_node --no-ssh needs the node count: --num-nodes N (or a --hostfile, or $SLURM_NNODES)")
    if hosts and len(hosts) != nodes:
        sys.exit(f"--num-nodes {nodes} but the hostfile {args.hostfile} lists {len(hosts)} hosts")
    if not 0 <= rank < nodes:
        sys.exit(f"multi_node --no-ssh needs this node's rank in 0..{nodes - 1}: --node-rank (or $NODE_RANK / "
                 f"$SLURM_NODEID); got {rank}")
    if not master:
        sys.exit("multi_node --no-ssh needs node 0's address: --master-addr (or $MASTER_ADDR, or a hostfile)")
    hostfile = args.hostfile
    if not hosts:
        import torch

        per_node = args.num_processes or (torch.cuda.device_count() if torch.cuda.is_available() else 1)
        d = Path(args.output_dir) / "logs"
        d.mkdir(parents=True, exist_ok=True)
        hostfile = str(d / f"hostfile-{nodes}x{per_node}")
        tmp = Path(f"{hostfile}.{os.getpid()}")
        tmp.write_text("".join(f"node-{i} slots={per_node}\n" for i in range(nodes)))
        os.replace(tmp, hostfile)        # every node writes the same text: whichever lands last is right
    port = args.master_port or int(env.get("MASTER_PORT", "29500"))
    return {"rank": rank, "nodes": nodes, "master": master, "port": port, "hostfile": hostfile}


def launcher(args, step: int = 1) -> list[str]:
    if args.deployment_type == "single_gpu":
        return [sys.executable]
    import torch

    n = args.num_processes or (torch.cuda.device_count() if torch.cuda.is_available() else 2)
    # the `deepspeed` launcher of this interpreter, whether or not its bin/ is on PATH
    ds = [sys.executable, "-m", "deepspeed.launcher.runner"]
    if args.deployment_type == "single_node":
        return ds + ["--num_gpus", str(n), "--master_port", str(29500 + os.getpid() % 1000)]
    if args.no_ssh:
        s = args.nodes
        return ds + ["--hostfile", s["hostfile"], "--no_ssh", "--node_rank", str(s["rank"]), "--master_addr",
                     s["master"], "--master_port", str(s["port"] + step - 1)]
    if not Path(args.hostfile).is_file():
        sys.exit(f"multi_node needs a hostfile; {args.hostfile} does not exist (use --hostfile, or --no-ssh "
                 f"with --num-nodes)")
    return ds + ["--hostfile", args.hostfile]
