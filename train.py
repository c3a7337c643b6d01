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

from launch.plan import SFT_INIT, STAGES, Plan, no_ssh_settings
from launch.report import build_report, table
from launch.report_html import write_report_html
from inference.passrate import EVAL_ENGINES
from training.utils.algorithms import ALGORITHMS, described

ROOT = Path(__file__).resolve().parent
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--step", type=int, nargs="+", default=None, choices=sorted(STAGES),
                    help="stages to run, in order (default: the algorithm's: 1 2 3 for ppo, 1 2 for the offline "
                         "losses, 1 3 for the critic-free algorithms)")
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
    ap.add_argument(
        "--algo",
        default="ppo",
        choices=tuple(ALGORITHMS),
        help=described(),
    )
    ap.add_argument("--deployment-type", default="single_gpu", choices=("single_gpu", "single_node", "multi_node"))
    ap.add_argument("--num-processes", type=int, default=0,
                    help="ranks for single_node (default: every local GPU; on CPU 2)")
    ap.add_argument("--hostfile", default="/job/hostfile",
                    help="multi_node: DeepSpeed hostfile ('host slots=N' per line); the launcher reaches the other "
                         "hosts by ssh (pdsh), or, with --no-ssh, every node runs this same command itself")
    mn = ap.add_argument_group("multi_node without ssh (every node runs the same command, e.g. from a Slurm job step)")
    mn.add_argument(
        "--no-ssh",
        action="store_true",
        help="one launcher per node; each node passes its own --node-rank (or sets NODE_RANK / SLURM_NODEID)",
    )
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
    co = ap.add_argument_group("training on what a server collected (chat.py --serve --collect DIR)")
    co.add_argument("--from-collected", metavar="DIR",
                    help="stage 2 trains the reward model on everything people labelled in DIR (the pair verdicts, "
                         "and the thumbs as pointwise labels) and stage 3 trains on DIR's prompts; both write a new "
                         "version folder <output-dir>/collected/vN, never over a model being served (default "
                         "--step 2 3; stage 3 starts from the SFT model, or from --sft-model, e.g. the served one)")
    co.add_argument("--collected-mix", type=float, default=0.5,
                    help="share of stage 3's training prompts drawn from DIR, the rest from --data_path (1: DIR's "
                         "alone)")
    ap.add_argument("--output-dir", default="output")
    ap.add_argument("--config", help="YAML/JSON config file passed to every stage")
    ap.add_argument("--eval-set", default="test", choices=("test", "dev"),
                    help="the bundled evaluation set of the closing report: test (576 prompts, 64 per task: what "
                         "results report) or dev (288, 32 per task: where presets and levers are chosen); neither "
                         "shares wording or parameters with any training row")
    ap.add_argument("--eval-prompts", type=int, default=0,
                    help="only the first N prompts of --eval-set (still task-balanced; 0: the whole set on a real "
                         "model, 36 on tiny)")
    ap.add_argument("--eval-rm-prompts", type=int, default=108,
                    help="the reward model scores every model's answers to the first N evaluation prompts (12 per "
                         "task; 0: all): its mean score per model in the report")
    ap.add_argument("--eval-max-new-tokens", type=int, default=48,
                    help="answer length limit of the closing evaluation (greedy; Stage 3 samples 48 on the presets)")
    ap.add_argument("--eval-engine", default="hf", choices=tuple(EVAL_ENGINES),
                    help="what writes the closing evaluation's greedy answers: transformers (hf) or vLLM serving each "
                         "saved model (vllm; single-turn only)")
    ap.add_argument("--overwrite", action="store_true",
                    help="train stages again whose output directory holds a finished model (replacing it); "
                         "without it such a run stops before it starts")
    ap.add_argument("--dry-run", action="store_true", help="print the stage commands and stop")
    return ap.parse_known_args(argv)


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
    if 2 in steps and not args.plan.offline and not args.plan.rm_from_sft:
        names["--reward-model"] = args.reward_model
    for flag, name in names.items():
        problem = model_problem(name, flag)
        if problem:
            sys.exit(problem)


def check_collected(args) -> None:
    """Stop in a second when --from-collected cannot be trained on: no such directory, nothing labelled, a
    bad record (the file, row and field named) or a mix out of range."""
    from training.utils.data.sources import DataError
    from training.utils.labels.human import read_human_labels

    if not 0.0 < args.collected_mix <= 1.0:
        sys.exit(f"--collected-mix must be in (0, 1], got {args.collected_mix}")
    if not Path(args.from_collected).is_dir():
        sys.exit(f"--from-collected {args.from_collected}: no such directory (chat.py --serve --collect DIR writes "
                 f"one)")
    try:
        pairs, counts, points = read_human_labels(args.from_collected)
    except DataError as e:
        sys.exit(f"--from-collected: {e}")
    args.collected_counts = {"verdicts": counts["rows"], "thumbs": len(points), "pairs": len(pairs)}
    print(f"--from-collected {args.from_collected}: {counts['rows']} verdicts and {len(points)} thumbs -> {len(pairs)} "
          f"pairs", flush=True)


def main(argv=None) -> dict:
    t_start = time.time()
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    args.resume = "--resume" in extra
    if args.from_collected:
        check_collected(args)
    if os.getcwd() not in sys.path:      # the stages import the user's modules (tools, rules) from here too
        sys.path.append(os.getcwd())
    # multi_node --no-ssh: this node's rank, the node count, master and hostfile, settled once for every stage
    args.nodes = no_ssh_settings(args) if args.deployment_type == "multi_node" and args.no_ssh else None
    plan = args.plan = Plan(args)
    default = [2, 3] if args.from_collected else plan.default_steps
    if args.sft_model:
        if args.step and 1 in args.step:
            sys.exit("--sft-model replaces stage 1: drop 1 from --step")
        default = [s for s in default if s != 1]
    steps = sorted(set(args.step or default))
    if args.from_collected and (1 in steps or plan.offline):
        sys.exit("--from-collected trains the reward model (stage 2) and the policy (stage 3) on what a server "
                 "collected: use --step 2 3 (or 3) with an online --algo")
    if plan.offline and 3 in steps:
        sys.exit(f"--algo {plan.algo} replaces stages 2 and 3 with an offline loss in stage 2: use --step 1 2")
    out = Path(args.output_dir)
    home = plan.version or out       # where the report goes: a --from-collected version keeps its own
    if not args.dry_run:
        check_models(args, steps)
    for step in steps:
        for need, what in plan.needs(step).items():
            if need not in steps and not (plan.output(need) / "config.json").is_file():
                sys.exit(f"stage {step} needs {what}, but {plan.output(need)} does not exist: "
                         f"run stage {need} first or include it in --step")
    export = any(t.split("=", 1)[0] == "--export_for_labelling" for t in extra)
    if export and 3 in steps:     # stage 2 writes the comparisons for people to label and stops
        steps = [s for s in steps if s < 3]
        print("--export_for_labelling: stage 2 samples the comparisons, writes them and stops; stage 3 is not run "
              "(label them, then run stage 2 again with --labeller human:FILE)", flush=True)
    routed = plan.route(extra, steps)
    import torch

    gpu, shapes = torch.cuda.is_available(), {}
    presets = {step: plan.preset(step, gpu, shapes) for step in steps}
    commands = {step: plan.command(step, presets, routed[step]) for step in steps}
    from training.utils.arguments import parse_config
    from training.utils.config import ConfigError
    from training.utils.data.sources import DataError, Keys, get_source

    checked, cfgs = set(), {}
    for step in steps:       # every stage's flags, config file and data paths, before any stage starts
        try:
            cfg = cfgs[step] = parse_config(plan.stage_args(step, presets, routed[step]), stage=plan.spec(step).owner)
            for spec in [*cfg.data.data_path, *cfg.data.sft_only_data_path, *cfg.data.rl_only_data_path]:
                if spec not in checked:
                    get_source(spec, Keys(), cfg.data.bundled_size)
                    checked.add(spec)
        except (ConfigError, DataError) as e:
            sys.exit(f"stage {step}: {e}")
    finished = [str(plan.output(s)) for s in steps if (plan.output(s) / "summary.json").is_file()]
    if finished and not args.overwrite and "--resume" not in extra and not args.dry_run:
        sys.exit(f"{', '.join(finished)} already hold(s) a finished model: pass --resume to keep finished stages and "
                 f"continue, --overwrite to train them again, or another --output-dir")
    run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    if args.dry_run:
        for step in steps:
            print(f"stage {step}: {shlex.join(commands[step])}")
            print(plan.describe(step, presets, routed[step]))
        return {}
    if plan.version is not None:
        plan.version.mkdir(parents=True, exist_ok=True)
        (plan.version / "collected.json").write_text(json.dumps(
            {"from_collected": str(Path(args.from_collected).resolve()), "collected_mix": args.collected_mix,
             "labels": args.collected_counts, "starts_from": plan.sft_model(), "steps": steps,
             "command": shlex.join(sys.argv), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2) + "\n")
        print(f"--from-collected: this run writes version {plan.version}", flush=True)
    times = {}
    for step in steps:
        if "--resume" in extra and (plan.output(step) / "summary.json").is_file():
            print(f"\n=== stage {step}: finished before ({plan.output(step)}), skipped by --resume", flush=True)
            times[step] = 0.0
            continue
        times[step] = run_stage(step, commands[step], run_logs(out, run_id) / f"step{step}.log")
    if export:
        print("\n=== the comparisons to label are written; no model was trained in stage 2", flush=True)
        return {"stage_seconds": {str(k): round(v, 1) for k, v in times.items()}}
    if args.nodes is not None and args.nodes["rank"] != 0:
        print(f"\n=== node {args.nodes['rank']}: every stage finished; node 0 writes the report", flush=True)
        return {"stage_seconds": {str(k): round(v, 1) for k, v in times.items()}}
    report, answers = build_report(plan, steps, cfgs, times, t_start)
    (home / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    page = write_report_html(report, answers, home / "report.html")
    print("\n=== report")
    if "pass_rate" in report:
        print(table(report))
    for k, v in report.items():
        if k not in ("pass_rate", "pass_rate_ci", "gain", "rm_score", "kl_to_reference", "per_task", "per_task_ci",
                     "per_task_n", "plots", "rm_scored_prompts"):
            print(f"{k}: {v}")
    print(f"(also in {home / 'report.json'}; figures, curves and answers side by side in {page})")
    if plan.version is not None:
        print(version_verdict(report, plan), flush=True)
    return report


def version_verdict(report: dict, plan) -> str:
    """Whether the new version beats the model it started from on the closing evaluation (the paired-bootstrap
    interval of its gain): the line that says whether to reload it."""
    gains = report.get("gain", {})
    name = next((k for k, g in gains.items() if g.get("over") == "sft"), None)      # the new model over its start
    if name is None:
        return f"=== version {plan.version}: no closing evaluation to judge it by"
    g = gains[name]
    figure = (f"{100 * g['gain']:+.1f} points over {g['over']} (95% interval {100 * g['lo']:+.1f} .. "
              f"{100 * g['hi']:+.1f})")
    if g["lo"] > 0:
        return f"=== version {plan.version}: better, {figure}: reload it"
    if g["hi"] < 0:
        return f"=== version {plan.version}: worse, {figure}: keep serving the model you have"
    return f"=== version {plan.version}: not distinguishable from the model it started from, {figure}"


if __name__ == "__main__":
    main()
