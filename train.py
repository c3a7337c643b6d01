"""One command for the whole pipeline, with DeepSpeed-Chat's flags.

    python train.py                                   # the main job: SmolLM2-135M on the bundled data
    python train.py --actor-model tiny                # a one-minute smoke run
    python train.py --step 1 --actor-model 1.3b --deployment-type single_node --actor-zero-stage 2

Each stage runs as its own process (the ``deepspeed`` launcher for several ranks), its log is
streamed and saved under ``<output-dir>/logs/``, and a report closes the run.

Flags not listed below go to the stages that own them (after the preset, so they win over it):
``--kl_coef 0.02`` to stage 3 only, ``--rm_loss per_token`` to the reward model only, shared ones such
as ``--seed`` or ``--max_steps`` to every stage. A flag that no stage knows, or whose stage is not in
this run, stops the run before it starts. Each stage lists its own flags:
``python training/step1_supervised_finetuning/main.py --help`` (and step2_reward_model_finetuning/,
step2_reward_model_finetuning/dpo_main.py, step3_rlhf_finetuning/).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from launch.report import closing_eval, rl_figures, table
from launch.report_html import write_report_html
from training.utils.rl.advantages import ESTIMATORS, critic_free, estimator_for

ROOT = Path(__file__).resolve().parent
STAGES = {
    1: ("step1_supervised_finetuning/main.py", "actor-models"),
    2: ("step2_reward_model_finetuning/main.py", "reward-models"),
    3: ("step3_rlhf_finetuning/main.py", "step3-models"),
}
DPO = ("step2_reward_model_finetuning/dpo_main.py", "actor-models")
CRITIC_FREE = critic_free()     # grpo, dr_grpo, rloo, remax, ...: from the algorithm registry
SFT_INIT = "sft"     # --reward-model default: start the reward model from the Stage 1 output
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class Plan:
    """What ``--algo`` asks of the pipeline, looked up once: ``offline`` (DPO-family losses replace stages
    2 and 3), and for stage 3 the algorithm's record (``critic``: PPO's reward model and critic)."""

    def __init__(self, algo: str):
        self.name, self.offline = algo, algo == "dpo"
        self.critic = not self.offline and estimator_for(algo).critic

    @property
    def default_steps(self) -> list[int]:
        return [1, 2] if self.offline else [1, 2, 3] if self.critic else [1, 3]


def model_tag(name: str) -> str:
    return Path(name.rstrip("/")).name.replace("/", "_") or "model"


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--step", type=int, nargs="+", default=None, choices=sorted(STAGES),
                    help="stages to run, in order (default: 1 2 3; --algo dpo: 1 2; the critic-free algorithms: 1 3)")
    ap.add_argument("--actor-model", default="smollm2-135m", help="actor model (name, alias or directory)")
    ap.add_argument("--reward-model", default=SFT_INIT,
                    help="model the reward model starts from (name, alias or directory); default: the Stage 1 "
                         "(SFT) output, as in InstructGPT: on the main job it ranks the policy's own answers "
                         "far better than one started from the base model (BENCHMARKS.md)")
    ap.add_argument("--sft-model", default=None,
                    help="the model DPO, a reward model started from SFT, and stage 3 start from instead of the stage "
                         "1 output (a directory, hub id or alias): RL straight from an instruct model, as TRL's GRPO "
                         "does; stage 1 is then not run")
    ap.add_argument("--actor-zero-stage", type=int, default=None, choices=(0, 1, 2, 3))
    ap.add_argument("--reward-zero-stage", type=int, default=None, choices=(0, 1, 2, 3))
    ap.add_argument("--algo", default="ppo", choices=("dpo", *ESTIMATORS),
                    help="ppo: stage 2 trains a reward model, stage 3 runs PPO; dpo: stage 2 runs DPO on the "
                         "SFT actor; " + "/".join(CRITIC_FREE) + ": stage 3 without a critic, rewarded by the rule in the "
                         "preset (the bundled checker), so stages 1 and 3 only")
    ap.add_argument("--deployment-type", default="single_gpu", choices=("single_gpu", "single_node", "multi_node"))
    ap.add_argument("--num-processes", type=int, default=0,
                    help="ranks for single_node (default: every local GPU; on CPU 2)")
    ap.add_argument("--hostfile", default="/job/hostfile",
                    help="multi_node: DeepSpeed hostfile ('host slots=N' per line); the launcher reaches the other "
                         "hosts by ssh (pdsh), or, with --no-ssh, every node runs this same command itself")
    mn = ap.add_argument_group("multi_node without ssh (every node runs the same command, e.g. from a Slurm job step)")
    mn.add_argument("--no-ssh", action="store_true",
                    help="one launcher per node; each node passes its own --node-rank (or sets NODE_RANK / SLURM_NODEID)")
    mn.add_argument("--node-rank", type=int, default=None, help="this node's index, 0 .. num-nodes - 1 "
                    "(default: $NODE_RANK, else $SLURM_NODEID)")
    mn.add_argument("--num-nodes", type=int, default=None,
                    help="nodes in the run (default: the hostfile's hosts, else $SLURM_NNODES); without a hostfile "
                         "each node runs --num-processes ranks")
    mn.add_argument("--master-addr", default=None,
                    help="address of node 0, reachable from every node (default: $MASTER_ADDR, else the hostfile's "
                         "first host)")
    mn.add_argument("--master-port", type=int, default=None,
                    help="rendezvous port on node 0 (default: $MASTER_PORT, else 29500); stage N uses port + N - 1")
    ap.add_argument("--output-dir", default="output")
    ap.add_argument("--config", help="YAML/JSON config file passed to every stage")
    ap.add_argument("--eval-prompts", type=int, default=0,
                    help="held-out prompts for the closing pass-rate report (0: 96 on the default "
                         "model, 32 on tiny)")
    ap.add_argument("--eval-max-new-tokens", type=int, default=48,
                    help="answer length limit of the closing evaluation (greedy; Stage 3 samples 48 on the presets)")
    ap.add_argument("--fresh-prompts", type=int, default=0,
                    help="also report the pass-rate on this many fresh held-out prompts (a second set, "
                         "disjoint from the --eval-prompts set that presets are read on)")
    ap.add_argument("--overwrite", action="store_true",
                    help="train stages again whose output directory holds a finished model (replacing it); "
                         "without it such a run stops before it starts")
    ap.add_argument("--dry-run", action="store_true", help="print the stage commands and stop")
    return ap.parse_known_args(argv)


def no_ssh_settings(args) -> dict:
    """multi_node --no-ssh: this node's rank, the node count, the master address and port, and the
    hostfile every node's launcher reads (the given one, else one written for --num-nodes)."""
    env = os.environ
    hosts = []
    if Path(args.hostfile).is_file():
        hosts = [ln.split()[0] for ln in Path(args.hostfile).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
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


def stage_script(step: int, args) -> str:
    return (DPO if step == 2 and args.plan.offline else STAGES[step])[0]


def stage_output(step: int, args) -> Path:
    out = Path(args.output_dir)
    if step == 2 and args.plan.offline:
        return out / DPO[1] / (model_tag(args.actor_model) + "-dpo")
    model = args.reward_model if step == 2 and args.reward_model != SFT_INIT else args.actor_model
    suffix = f"-{args.algo}" if step == 3 and not args.plan.critic else ""
    return out / STAGES[step][1] / (model_tag(model) + suffix)


def stage_model(step: int, args) -> str:
    """The model a stage's preset is chosen by: the reward model's start for stage 2, else the actor
    (the SFT output has the actor's shape)."""
    return args.reward_model if step == 2 and not args.plan.offline and args.reward_model != SFT_INIT else args.actor_model


def stage_preset(step: int, args):
    """(Preset, its YAML file, the model shape it was chosen by) of stage ``step``
    (``training.utils.presets``: measured, or DeepSpeed-Chat's by size and deployment)."""
    from training.utils.presets import choose, model_shape, preset_file

    name = stage_model(step, args)
    if name not in args.shapes:
        args.shapes[name] = model_shape(name) if name not in ("tiny", "tiny-opt") else None
    p, shape = choose(step, name, args.algo, args.deployment_type, args.gpu, args.shapes[name])
    return p, preset_file(p, args.output_dir, step), shape


def stage_name(step: int, args) -> str:
    """The config owner (``training.utils.config.STAGE_SECTIONS``) of stage ``step`` in this run."""
    return {1: "sft", 2: "dpo" if args.plan.offline else "reward", 3: "rl"}[step]


def flag_groups(extra: list[str]) -> list[list[str]]:
    """``--a 1 --b x y --c`` -> [[--a, 1], [--b, x, y], [--c]] (``--a=1`` stays one token)."""
    groups: list[list[str]] = []
    for tok in extra:
        if tok.startswith("--") or not groups:
            groups.append([tok])
        else:
            groups[-1].append(tok)
    return groups


def route(extra: list[str], args, steps) -> dict[int, list[str]]:
    """The pass-through flags of each stage in ``steps``: each flag goes to the stages that own it.
    Exits with one line on a flag that no stage knows or whose stages do not run."""
    from training.utils.config import STAGE_SECTIONS
    from training.utils.arguments import build_parser

    known = {name: set(build_parser(stage=name)._option_string_actions) for name in STAGE_SECTIONS}
    out: dict[int, list[str]] = {s: [] for s in steps}
    for group in flag_groups(extra):
        flag = group[0].split("=", 1)[0]
        if not flag.startswith("--"):
            sys.exit(f"unexpected argument {group[0]!r}: stage flags start with -- (see --help)")
        takers = [s for s in steps if flag in known[stage_name(s, args)]]
        if not takers:
            owners = sorted(name for name, flags in known.items() if flag in flags)
            if not owners:
                sys.exit(f"unknown flag {flag}: not a flag of train.py or of any stage (train.py --help, or a "
                         f"stage's --help, lists them)")
            sys.exit(f"{flag} is a flag of the {'/'.join(owners)} stage, which this run does not include "
                     f"(--step {' '.join(map(str, steps))}, --algo {args.algo})")
        for s in takers:
            out[s] += group
    return out


def sft_model(args) -> str:
    """What the later stages start from: ``--sft-model``, else the stage 1 output."""
    return args.sft_model or str(stage_output(1, args))


def stage_args(step: int, args, extra: list[str]) -> list[str]:
    rm_from_sft = step == 2 and not args.plan.offline and args.reward_model == SFT_INIT
    model = args.reward_model if step == 2 and not args.plan.offline and not rm_from_sft else args.actor_model
    a = ["--output_dir", str(stage_output(step, args)), "--config", str(args.presets[step][1]),
         *([args.config] if args.config else [])]
    if step == 2 and args.plan.offline or step == 3 or rm_from_sft:
        sft = sft_model(args)
        a += ["--model_name_or_path", sft, *(["--tokenizer_name_or_path", sft] if not args.sft_model else [])]
    else:
        a += ["--model_name_or_path", model]
    if step == 3:
        a += ["--algo", args.algo]
        rm = stage_output(2, args)
        if args.plan.critic or (rm / "config.json").is_file() or 2 in (args.step or []):
            a += ["--reward_model_name_or_path", str(rm)]
        if args.reward_zero_stage is not None:
            a += ["--critic_zero_stage", str(args.reward_zero_stage), "--reward_zero_stage", str(args.reward_zero_stage)]
    zero = args.reward_zero_stage if step == 2 and not args.plan.offline else args.actor_zero_stage
    if zero is not None:
        a += ["--zero_stage", str(zero)]
    if args.overwrite:
        a += ["--overwrite"]
    return a + extra


def describe(step: int, args, extra: list[str]) -> str:
    """The preset stage ``step`` starts from, why, and every resolved setting with where it came from
    (the preset, a --config file, a flag, or the default), the ones not at their defaults first."""
    from training.utils.arguments import explain

    p, path, shape = args.presets[step]
    why = f" for {stage_model(step, args)}: {shape.text()}" if shape else ""
    rows = [(name, value, "preset" if where == f"config file {path}" else where)
            for name, value, where in explain(stage_args(step, args, extra), stage_name(step, args))]
    rows.sort(key=lambda r: r[2] == "default")
    return "\n".join([f"  preset {p.name} ({p.source}){why}"] +
                     [f"    {name} = {value!r}  [{where}]" for name, value, where in rows])


def run_logs(out: Path, run_id: str) -> Path:
    """This run's log folder ``<out>/logs/<run_id>``, with ``<out>/logs/latest`` pointing at it: an
    earlier run's logs are never overwritten."""
    d = out / "logs" / run_id
    if not d.is_dir():
        d.mkdir(parents=True)
        link = out / "logs" / f".latest-{run_id}"
        link.symlink_to(run_id)
        os.replace(link, out / "logs" / "latest")
    return d


def run_stage(step: int, cmd: list[str], log_path: Path) -> float:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"\n=== stage {step}: {shlex.join(cmd)}\n    log: {log_path}", flush=True)
    t0 = time.time()
    with open(log_path, "w") as log:
        # each stage sets up its own process group: inherited rendezvous variables (from a parent that
        # is itself distributed) would point it at a port that is already taken
        env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
        # the stage runs where train.py was started: relative paths (--output-dir, --data_path) mean the same
        # to both, and the user's modules there (--reward rule:my_rules:fn) import, as does this project
        path = os.pathsep.join([str(ROOT), os.getcwd(), *filter(None, [env.get("PYTHONPATH")])])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=os.getcwd(), text=True,
                                bufsize=1, env={**env, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path})
        tail: list[str] = []
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
            tail = (tail + [line])[-200:]
        rc = proc.wait()
    if rc != 0:
        text = "".join(tail).lower()
        hint = ""
        if "out of memory" in text or "oom" in text:
            hint = ("out of memory: lower --per_device_train_batch_size, use --actor-zero-stage 3, "
                    "--offload, --lora_dim 128 --only_optimize_lora, or --gradient_checkpointing")
        elif "dataerror" in text or "configerror" in text:
            hint = "fix the data or config entry named above"
        elif "did not all meet" in text or "started with different configuration" in text:
            hint = ("start every node with the same command, each with its own --node-rank, the same --num-nodes "
                    "and a --master-addr / --master-port that every node can reach")
        elif "connection closed by peer" in text or "timed out waiting" in text:
            hint = ("another rank or node stopped (see its log); after fixing it, rerun the same command with "
                    "--resume on every node")
        sys.exit(f"stage {step} failed (exit {rc}); full log: {log_path}" + (f"\nlikely fix: {hint}" if hint else ""))
    return time.time() - t0


def check_models(args, steps) -> None:
    """Stop in seconds, with one message, when a model named on the command line cannot be loaded."""
    from training.utils.model.loader import model_problem

    names = {"--actor-model": args.actor_model}
    if 2 in steps and not args.plan.offline and args.reward_model != SFT_INIT:
        names["--reward-model"] = args.reward_model
    for flag, name in names.items():
        problem = model_problem(name, flag)
        if problem:
            sys.exit(problem)


def main(argv=None) -> dict:
    t_start = time.time()
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    # multi_node --no-ssh: this node's rank, the node count, master and hostfile, settled once for every stage
    args.nodes = no_ssh_settings(args) if args.deployment_type == "multi_node" and args.no_ssh else None
    args.plan = Plan(args.algo)
    default = args.plan.default_steps
    if args.sft_model:
        if args.step and 1 in args.step:
            sys.exit("--sft-model replaces stage 1: drop 1 from --step")
        default = [s for s in default if s != 1]
    steps = sorted(set(args.step or default))
    if args.plan.offline and 3 in steps:
        sys.exit("--algo dpo replaces stages 2 and 3 with DPO: use --step 1 2")
    out = Path(args.output_dir)
    if not args.dry_run:
        check_models(args, steps)
    plans = []
    for step in steps:
        needs = {1: "the SFT model (--step 1, or --sft-model)"} if not args.sft_model and (step == 3 or step == 2 and (
            args.plan.offline or args.reward_model == SFT_INIT)) else {}
        if step == 3 and args.plan.critic:
            needs[2] = "the reward model (--step 2)"
        for need, what in needs.items():
            if need not in steps and not (stage_output(need, args) / "config.json").is_file():
                sys.exit(f"stage {step} needs {what}, but {stage_output(need, args)} does not exist: "
                         f"run stage {need} first or include it in --step")
    export = any(t.split("=", 1)[0] == "--export_for_labelling" for t in extra)
    if export and 3 in steps:     # stage 2 writes the comparisons for people to label and stops
        steps = [s for s in steps if s < 3]
        print("--export_for_labelling: stage 2 samples the comparisons, writes them and stops; stage 3 is not run "
              "(label them, then run stage 2 again with --labeller human:FILE)", flush=True)
    routed = route(extra, args, steps)
    import torch

    args.gpu, args.shapes = torch.cuda.is_available(), {}
    args.presets = {step: stage_preset(step, args) for step in steps}
    for step in steps:
        script = ROOT / "training" / stage_script(step, args)
        plans.append((step, launcher(args, step) + [str(script)] + stage_args(step, args, routed[step])))
    from training.utils.config import ConfigError
    from training.utils.arguments import parse_config

    from training.utils.data.sources import DataError, Keys, get_source

    checked, cfgs = set(), {}
    for step, _ in plans:       # every stage's flags, config file and data paths, before any stage starts
        try:
            cfg = cfgs[step] = parse_config(stage_args(step, args, routed[step]), stage=stage_name(step, args))
            for spec in [*cfg.data.data_path, *cfg.data.sft_only_data_path]:
                if spec not in checked:
                    get_source(spec, Keys(), cfg.data.bundled_size)
                    checked.add(spec)
        except (ConfigError, DataError) as e:
            sys.exit(f"stage {step}: {e}")
    finished = [str(stage_output(s, args)) for s, _ in plans if (stage_output(s, args) / "summary.json").is_file()]
    if finished and not args.overwrite and "--resume" not in extra and not args.dry_run:
        sys.exit(f"{', '.join(finished)} already hold(s) a finished model: pass --resume to keep finished stages and "
                 f"continue, --overwrite to train them again, or another --output-dir")
    run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    if args.dry_run:
        for step, cmd in plans:
            print(f"stage {step}: {shlex.join(cmd)}")
            print(describe(step, args, routed[step]))
        return {}
    times = {}
    for step, cmd in plans:
        if "--resume" in extra and (stage_output(step, args) / "summary.json").is_file():
            print(f"\n=== stage {step}: finished before ({stage_output(step, args)}), skipped by --resume", flush=True)
            times[step] = 0.0
            continue
        times[step] = run_stage(step, cmd, run_logs(out, run_id) / f"step{step}.log")
    if export:
        print("\n=== the comparisons to label are written; no model was trained in stage 2", flush=True)
        return {"stage_seconds": {str(k): round(v, 1) for k, v in times.items()}}
    if args.nodes is not None and args.nodes["rank"] != 0:
        print(f"\n=== node {args.nodes['rank']}: every stage finished; node 0 writes the report", flush=True)
        return {"stage_seconds": {str(k): round(v, 1) for k, v in times.items()}}
    report = {"stage_seconds": {str(k): round(v, 1) for k, v in times.items()}, "models": {},
              "stage_dirs": {str(s): str(stage_output(s, args)) for s in steps}}
    rm_dir, answers = None, {}
    if 2 in steps and not args.plan.offline or 3 in steps and args.plan.critic:
        rm_dir = stage_output(2, args)
        rm_summary = json.loads((rm_dir / "summary.json").read_text())
        rm = rm_summary["final_eval"]
        report["reward_model"] = {"held_out_pair_accuracy": rm["acc"], "margin": rm["margin"]}
        comp = rm_summary.get("comparisons")
        if comp:        # comparison data from the policy: the labels it cost and the on-policy AUC
            report["reward_model"].update(
                labeller=comp["labeller"], labels=comp.get("labels", 0), label_budget=comp.get("label_budget"),
                policy_pairs=comp.get("pairs", 0), eval_labels=comp.get("eval_labels", 0),
                **{k: rm[k] for k in ("on_policy_auc", "on_policy_within_prompt_auc", "within_prompt_pairs") if k in rm})
        report["models"]["reward"] = str(rm_dir)
    actors = {"base": args.actor_model}
    if 1 in steps or 3 in steps or args.plan.offline:
        actors["sft"] = sft_model(args)
    if 2 in steps and args.plan.offline:
        actors["dpo"] = str(stage_output(2, args))
    if 3 in steps:
        actors[args.algo] = str(stage_output(3, args) / "actor")
        rl = rl_figures(stage_output(3, args))
        report[args.algo] = rl
        for key in ("reward_trend", "gold_trend", "agreement_trend", "reward_refresh"):
            if key in rl:
                report[key] = rl[key]
        if "reward_refresh" in rl and "reward_model" in report:     # the labels of stage 2 and of stage 3 together
            report["reward_model"]["labels_total"] = report["reward_model"].get("labels", 0) + rl["reward_refresh"]["labels"]
        report["kl_to_reference"] = {"sft": 0.0}
        if "final_kl" in rl:     # absent when the run loaded no reference model (critic-free, kl_coef 0)
            report["kl_to_reference"][args.algo] = rl["final_kl"]
    if 3 in steps and cfgs[3].data.data_path != ["bundled"]:
        # the user's own data: its evaluation prompts, scored by its own metric in stage 3 (--eval_reward), at
        # the start and the end; the bundled checker's held-out prompts would measure another task
        s3 = json.loads((stage_output(3, args) / "summary.json").read_text())
        first, final = s3.get("first_eval") or {}, s3.get("final_eval") or {}
        report["pass_rate"] = {k: e["pass_rate"] for k, e in (("sft", first), (args.algo, final)) if "pass_rate" in e}
        report["eval_reward"] = {k: e["eval_reward"] for k, e in (("sft", first), (args.algo, final))
                                 if "eval_reward" in e}
        report["held_out_prompts"] = s3["data"]["eval"]["kept"]
        report["evaluation"] = "stage 3's own metric on the evaluation prompts of " + " ".join(cfgs[3].data.data_path)
        report["models"].update({k: v for k, v in actors.items() if k != "base"})
        actors = {}
    if len(actors) > 1:
        from inference.passrate import fresh_prompts, held_out_prompts

        n = args.eval_prompts or (32 if args.actor_model in ("tiny", "tiny-opt") else 96)
        t_eval = time.time()
        res = closing_eval(actors, held_out_prompts(n), str(rm_dir) if rm_dir else None, args.eval_max_new_tokens)
        report["seconds"] = {"closing_eval": round(time.time() - t_eval, 1)}
        report["pass_rate"] = {k: r["pass_rate"] for k, r in res.items()}
        report["per_task"] = {k: r["per_task"] for k, r in res.items()}
        if rm_dir:
            report["rm_score"] = {k: r["rm_score"] for k, r in res.items()}
        report["held_out_prompts"] = n
        answers = {k: r["answers"] for k, r in res.items()}
        (out / "answers.json").write_text(json.dumps(answers, indent=1) + "\n")
        if args.fresh_prompts:
            t_fresh = time.time()
            fresh = closing_eval(actors, fresh_prompts(args.fresh_prompts, skip=n), None, args.eval_max_new_tokens)
            report["seconds"]["fresh_eval"] = round(time.time() - t_fresh, 1)
            report["fresh_pass_rate"] = {k: r["pass_rate"] for k, r in fresh.items()}
            report["fresh_prompts"] = args.fresh_prompts
        report["models"].update({k: v for k, v in actors.items() if k != "base"})
    if 1 in steps:
        report["sft_eval"] = json.loads((stage_output(1, args) / "summary.json").read_text())["final_eval"]
    secs = report.setdefault("seconds", {})
    secs["total"] = round(time.time() - t_start, 1)
    secs["main_job"] = round(secs["total"] - secs.get("fresh_eval", 0.0), 1)   # without the optional second set
    report["plots"] = sorted(str(p) for s in steps for p in stage_output(s, args).glob("*.png"))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    page = write_report_html(report, answers, out / "report.html")
    print("\n=== report")
    if "pass_rate" in report:
        print(table(report))
    for k, v in report.items():
        if k not in ("pass_rate", "fresh_pass_rate", "rm_score", "kl_to_reference", "per_task", "plots"):
            print(f"{k}: {v}")
    print(f"(also in {out / 'report.json'}; figures, curves and answers side by side in {page})")
    return report


if __name__ == "__main__":
    main()
