"""``swapfl``: run simulations, prepare and inspect data, print reports, list components."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from simulations.launcher import (
    APP_DIR,
    add_ray_argument,
    check_ray_address,
    run_simulation,
    virtual_nodes,
)

PATH_KEYS = ("work-dir", "out-dir")  # "data-source" too, unless it is "synthetic"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def app_defaults(app_dir: Path = APP_DIR) -> dict[str, Any]:
    with (app_dir / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["tool"]["flwr"]["app"]["config"]


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def resolve_run_config(scenario: str | None, overrides: list[str],
                       defaults: dict[str, Any]) -> dict[str, Any]:
    """Defaults < scenario file < ``key=value`` overrides; unknown keys are errors; the
    paths become absolute (relative to the current directory) so every process agrees."""
    config: dict[str, Any] = {}
    if scenario:
        path = Path(scenario)
        if not path.is_file() and (SCENARIOS / f"{scenario}.toml").is_file():
            path = SCENARIOS / f"{scenario}.toml"
        if not path.is_file():
            known = sorted(p.stem for p in SCENARIOS.glob("*.toml"))
            raise SystemExit(f"scenario {scenario!r} not found (file or one of {known})")
        with path.open("rb") as handle:
            config.update(tomllib.load(handle).get("run-config", {}))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        config[key.strip()] = _parse_value(value.strip())
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise SystemExit(f"unknown run-config keys {unknown}; known: {sorted(defaults)}")
    merged = {**defaults, **config}
    for key in PATH_KEYS:
        merged[key] = str(Path(str(merged[key])).expanduser().resolve())
    if merged.get("data-source", "synthetic") != "synthetic":
        merged["data-source"] = str(Path(str(merged["data-source"])).expanduser().resolve())
    return merged


def _check_run_config(config: dict[str, Any]) -> Any:
    """The typed settings of a whole run config, its strategies and first personalization
    checked (a clear error before anything slow starts)."""
    from simulations.settings import Settings
    from strategies.first_personalization import create_first_personalization
    from strategies.registry import create_many

    try:
        settings = Settings.from_run_config(config)
        create_many(settings.strategies, settings.strategy_options)
        create_first_personalization(settings.personalize, settings.personalize_options)
    except (KeyError, ValueError) as err:
        raise SystemExit(f"bad run config: {err}") from err
    return settings


def prepare(config: dict[str, Any]) -> dict[str, Any]:
    """The data owner's step, before any Flower process: validate the whole run config, then
    generate/partition the data (errors on bad files surface here, in seconds); returns the
    config with ``data-dir`` set to the prepared folder."""
    from simulations.data import prepare_dataset

    settings = _check_run_config(config)
    try:
        data_dir = prepare_dataset(settings.work_dir, settings.task, settings.data_source,
                                   settings.users, settings.synthetic())
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"data: {err}") from err
    return {**config, "data-dir": str(data_dir)}


def resume_config(run_dir: Path) -> dict[str, Any]:
    """The recorded configuration of a stopped run, set to continue it in place."""
    import json

    config_file = run_dir / "config.json"
    if not config_file.is_file() or not (run_dir / "rows.jsonl").is_file():
        raise SystemExit(f"--resume {run_dir}: not a run folder (config.json and rows.jsonl "
                         "expected, e.g. results/<run>)")
    recorded = json.loads(config_file.read_text())
    missing = sorted(set(app_defaults()) - set(recorded) - {"resume-run"})
    if missing:
        raise SystemExit(f"--resume {run_dir}: recorded by an older swapfl (no {missing}); "
                         "start a new run")
    return {**recorded, "resume-run": run_dir.name, "out-dir": str(run_dir.parent)}


def cmd_run(args: argparse.Namespace) -> int:
    if args.ray_address:
        try:
            check_ray_address(args.ray_address)
        except (ConnectionError, ValueError) as err:
            raise SystemExit(f"--ray-address: {err}") from err
    started_at = time.time()
    started = time.perf_counter()
    if args.resume is not None:
        if args.scenario or args.set:
            raise SystemExit("--resume continues a run with its recorded configuration; "
                             "--scenario and --set cannot change it")
        run_dir = args.resume.resolve()
        status = run_dir / "status.json"
        if status.is_file() and '"complete": true' in status.read_text():
            print(f"{run_dir} is complete; nothing to resume", file=sys.stderr)
            return show_results(run_dir, started)
        config = prepare(resume_config(run_dir))
        code = run_simulation(config, virtual_nodes(config), cpus_per_node=args.cpus_per_device,
                              timeout=args.timeout, ray_address=args.ray_address)
        return show_results(run_dir, started) if code == 0 else code
    config = prepare(resolve_run_config(args.scenario, args.set, app_defaults()))
    nodes = virtual_nodes(config)
    logging.info("running %d virtual devices on %d virtual nodes, task %s; results under %s",
                 int(config["users"]), nodes, config["task"], config["out-dir"])
    code = run_simulation(config, nodes, cpus_per_node=args.cpus_per_device,
                          timeout=args.timeout, ray_address=args.ray_address)
    logging.info("simulation finished in %.1fs with exit code %d",
                 time.perf_counter() - started, code)
    runs = sorted((p for p in Path(config["out-dir"]).glob("*/rows.jsonl")
                   if p.stat().st_mtime >= started_at and p.stat().st_size),
                  key=lambda p: p.stat().st_mtime)
    if code == 0 and runs:
        return show_results(runs[-1].parent, started)
    print("the simulation did not produce result rows; see the log above", file=sys.stderr)
    return code or 1


def show_results(run_dir: Path, started: float) -> int:
    """Print a finished run's table; non-zero if the ServerApp stopped before the end (Flower's
    exit code does not say so: the run's status.json does)."""
    import json

    from simulations.report import write_report

    status_file = run_dir / "status.json"
    status = json.loads(status_file.read_text()) if status_file.is_file() else {}
    md = write_report(run_dir)
    print(f"\nresults: {run_dir} ({time.perf_counter() - started:.0f}s)\n")
    print(md.read_text())
    if status.get("failures"):
        print(f"{status['failures']} device failure(s) (missed or failed versions): "
              f"{run_dir / 'failures.jsonl'}", file=sys.stderr)
        for (version, strategy), count in failure_counts(run_dir).items():
            print(f"  {version} {strategy}: {count} device(s) without a row", file=sys.stderr)
    if not status.get("complete"):
        print(f"the run stopped before its end ({status.get('error', 'no status.json')}); "
              "the table holds the rows written until then", file=sys.stderr)
        return 1
    return 0


def failure_counts(run_dir: Path) -> dict[tuple[str, str], int]:
    """Devices without a row per (version, strategy), from failures.jsonl (a missed node
    counts the devices it runs)."""
    import json
    from collections import Counter

    counts: Counter[tuple[str, str]] = Counter()
    path = run_dir / "failures.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a killed run
        counts[(record["version"], record["strategy"])] += int(record.get("devices", 1))
    return dict(sorted(counts.items()))


def cmd_prepare(args: argparse.Namespace) -> int:
    config = prepare(resolve_run_config(args.scenario, args.set, app_defaults()))
    print(config["data-dir"])
    return 0


def cmd_data_generate(args: argparse.Namespace) -> int:
    from tasks.base import SyntheticSpec
    from tasks.registry import get_task

    spec = SyntheticSpec(seed=args.seed, users=args.users, public_users=args.public_users,
                         items=args.items, documents=args.documents)
    out = get_task(args.task).generate(args.out.resolve(), spec)
    print(f"synthetic {args.task} data written to {out}")
    return 0


def cmd_data_describe(args: argparse.Namespace) -> int:
    import json

    from tasks.registry import get_task

    try:
        info = get_task(args.task).describe(args.source.resolve())
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"data: {err}") from err
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    for key, value in info.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict)
                                                      for v in value.values()):
            print(f"{key}:")
            for name, sub in value.items():
                print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in sub.items()))
        else:
            print(f"{key}: {value}")
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from tasks.writers import CONVERTERS

    try:
        manifest = CONVERTERS[args.source_format](args.source.resolve(), args.out.resolve(),
                                                  classes=args.classes,
                                                  min_reviews=args.min_reviews)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"convert: {err}") from err
    print(f"wrote {args.out / 'writers.jsonl'}: " + ", ".join(
        f"{k} {v}" for k, v in manifest.items() if isinstance(v, (int, str))))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from tasks.registry import all_tasks

    for task in all_tasks():
        spec = task.metric_spec
        print(f"{task.name:12s} metrics {', '.join(spec.names)} (primary {spec.primary}); "
              f"data-source: {task.source_help}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from simulations.report import write_full_report

    try:
        md = write_full_report(args.run_dirs, args.out, baseline=args.baseline,
                               device_profile=args.device_profile,
                               profiles_path=args.profiles)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"report: {err}") from err
    print(md.read_text())
    print(f"written to {md.parent}")
    return 0


def cmd_analyze_cross_user(args: argparse.Namespace) -> int:
    from simulations.cross_user import write_cross_user

    try:
        md = write_cross_user(args.run_dir, args.strategies or None, args.seed, args.out)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"cross-user: {err}") from err
    print(md.read_text())
    print(f"written to {md.parent}")
    return 0


def cmd_deploy_up(args: argparse.Namespace) -> int:
    from simulations.deploy import DeploymentError, deploy_up

    config = prepare(resolve_run_config(args.scenario, args.set, app_defaults()))
    try:
        deployment = deploy_up(args.dir, config, Path(config["data-dir"]),
                               insecure=args.insecure)
    except DeploymentError as err:
        raise SystemExit(f"deploy: {err}") from err
    mode = "INSECURE (no TLS, no SuperNode authentication)" if args.insecure else (
        "TLS + SuperNode authentication")
    print(f"deployment up in {deployment.root}: SuperLink 127.0.0.1:"
          f"{deployment.superlink_port}, {deployment.users} SuperNodes, {mode}\n"
          f"next: swapfl deploy run --dir {args.dir}   (status, logs NAME, down)")
    return 0


def cmd_deploy_prepare(args: argparse.Namespace) -> int:
    from simulations.deploy import split_for_devices, write_users_env

    config = prepare(resolve_run_config(args.scenario, args.set, app_defaults()))
    root = args.dir.resolve()
    users = split_for_devices(Path(config["data-dir"]), str(config["task"]), root)
    env = write_users_env(root, users)
    print(f"{len(users)} device folders under {root} (node-<i>/data), the server's public data "
          f"in {root / 'server' / 'data'};\nthe users of the devices for docker compose: {env} "
          f"(docker compose --env-file {env} ...)")
    return 0


def _deployment(args: argparse.Namespace):
    from simulations.deploy import Deployment, DeploymentError

    try:
        return Deployment.load(args.dir)
    except DeploymentError as err:
        raise SystemExit(f"deploy: {err}") from err


def cmd_deploy_run(args: argparse.Namespace) -> int:
    from simulations.deploy import DeploymentError, deploy_run

    deployment = _deployment(args)
    overrides = dict(item.partition("=")[::2] for item in args.set)
    started = time.perf_counter()
    try:
        code, run_dir = deploy_run(deployment, {k: _parse_value(v) for k, v in
                                                overrides.items()}, timeout=args.timeout)
    except DeploymentError as err:
        raise SystemExit(f"deploy: {err}") from err
    if code != 0 or run_dir is None:
        print("the run did not produce result rows; see `swapfl deploy logs superexec-server`",
              file=sys.stderr)
        return code or 1
    return show_results(run_dir, started)


def cmd_deploy_status(args: argparse.Namespace) -> int:
    from simulations.deploy import deploy_status

    deployment = _deployment(args)
    print(f"{deployment.root}: SuperLink 127.0.0.1:{deployment.superlink_port}, "
          f"{deployment.users} devices{' (insecure)' if deployment.insecure else ''}")
    rows = deploy_status(deployment)
    for row in rows:
        state = f"running (pid {row['pid']})" if row["running"] else "stopped"
        print(f"  {row['service']:22s} {state:22s} {row['log']}")
    return 0 if all(row["running"] for row in rows) else 3


def cmd_deploy_logs(args: argparse.Namespace) -> int:
    deployment = _deployment(args)
    if args.service not in deployment.services:
        raise SystemExit(f"deploy: no service {args.service!r}; known: "
                         f"{sorted(deployment.services)}")
    lines = Path(deployment.services[args.service].log).read_text(errors="replace")
    print("\n".join(lines.splitlines()[-args.lines:]))
    return 0


def cmd_deploy_restart(args: argparse.Namespace) -> int:
    deployment = _deployment(args)
    index = int(args.device)
    if not 1 <= index <= deployment.users:
        raise SystemExit(f"deploy: device must be 1..{deployment.users}, got {index}")
    deployment.stop([f"supernode-{index}", f"superexec-node-{index}"])
    deployment.start_device(index, deployment.device_users()[index - 1])
    deployment.save()
    print(f"device {index} restarted (its state and release cache kept)")
    return 0


def cmd_deploy_down(args: argparse.Namespace) -> int:
    deployment = _deployment(args)
    stopped = deployment.stop()
    print(f"stopped {len(stopped)} processes: {', '.join(stopped) or 'none was running'}; "
          f"data, state and logs stay in {deployment.root}")
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    from strategies.registry import describe

    for name, text in describe().items():
        print(f"{name:20s} {text}")
    return 0


def cmd_bench_fala(args: argparse.Namespace) -> int:
    from simulations.bench import run_benchmarks

    config = resolve_run_config(args.scenario, args.set, app_defaults())
    results = run_benchmarks(config, args.out, args.repeats)
    for swap, r in results.items():
        print(f"{swap}: FaLA fit {r['fit-seconds-median']:.3f}s, frozen forwards "
              f"{r['forwards-seconds-median']:.3f}s -> ratio {r['fit-over-forwards']:.3f} "
              f"({r['examples']} examples, {r['documents-forwarded']} documents)")
    print(f"written to {args.out}")
    return 0


def cmd_bench_flops(args: argparse.Namespace) -> int:
    from simulations.bench_flops import run_flops_benchmark, write_result
    from simulations.settings import Settings

    config = resolve_run_config(args.scenario, args.set, app_defaults())
    try:
        settings = Settings.from_run_config(config)
    except (KeyError, ValueError) as err:
        raise SystemExit(f"bad run config: {err}") from err
    result = run_flops_benchmark(settings, batch_size=args.batch_size, length=args.tokens,
                                 scenario_users=args.users,
                                 skip_scenario=args.skip_default_scenario)
    write_result(result, args.out)
    print(f"FLOPs (2 per multiply-add), batch {args.batch_size} x {args.tokens} tokens, "
          "one training step:")
    for model, measured in result["models"].items():
        print(f"  {model}: frozen forward {measured['frozen-forward']['flops']:.3g}")
        for name, r in measured["strategies"].items():
            setup = f", setup {r['setup-flops']:.3g}" if r["setup-flops"] else ""
            print(f"    {name:14s} forward {r['forward-flops']:.3g}  backward "
                  f"{r['backward-flops']:.3g}{setup}  trainable {r['trainable-params']:,}")
    ratios = result["ratios"]
    for model, ratio in ratios["lora-backward-over-fala-solve"].items():
        if ratio is not None:
            print(f"  {model}: LoRA backward / FaLA solve = {ratio:.3g}")
    total = ratios["total-adaptation-lora-over-fala"]
    if total is not None:
        scenario = result["scenario"]
        print(f"  total adaptation FLOPs per user, LoRA / FaLA ({scenario['task']}, "
              f"{scenario['schedule']}, {scenario['users']} user(s)) = {total:.3g}")
    print(f"written to {args.out} ({result['seconds']:.0f}s)")
    failures = {f"{model}/{name}": error for model, measured in result["models"].items()
                for name, error in measured["failures"].items()}
    for where, error in failures.items():
        print(f"FAILED {where}: {error}", file=sys.stderr)
    return 1 if failures else 0


def parse_sizes(text: str) -> list[int]:
    """``100,1000,10000`` -> [100, 1000, 10000] (positive, as given)."""
    try:
        sizes = [int(item) for item in text.replace(" ", ",").split(",") if item]
    except ValueError as err:
        raise SystemExit(f"--users {text!r}: expected comma-separated integers") from err
    if not sizes or min(sizes) < 1:
        raise SystemExit(f"--users {text!r}: expected positive device counts")
    return sizes


def cmd_bench_scale(args: argparse.Namespace) -> int:
    from simulations.bench_scale import bench_scale

    sizes = parse_sizes(args.users)
    for users in sizes:  # every size's config is checked before anything slow starts
        config = resolve_run_config(args.scenario, [*args.set, f"users={users}"],
                                    app_defaults())
        _check_run_config(config)
    result = bench_scale(
        sizes, lambda users: prepare(resolve_run_config(
            args.scenario, [*args.set, f"users={users}"], app_defaults())),
        args.out, cpus_per_device=args.cpus_per_device, profile=args.profile_devices,
        sample_seconds=args.sample_seconds, timeout=args.timeout)
    failed = []
    for users, size in result["sizes"].items():
        per = size.get("seconds-per-device-version")
        print(f"{users:>6} devices: {size['wall-seconds']:.0f}s wall "
              f"(prepare {size['prepare-seconds']:.0f}s), "
              + (f"{per:.4f}s per device-version, " if per else "")
              + f"peak PSS {size['peak-pss-bytes'] / 2**30:.2f} GiB, "
              f"{'complete' if size.get('complete') else 'INCOMPLETE'}")
        for version, v in size.get("versions", {}).items():
            if "device-seconds" in v:
                print(f"         {version:12s} release {v.get('release-seconds', 0):.1f}s, "
                      f"devices {v['device-seconds']:.1f}s "
                      f"({v['messages-per-second']:.1f} messages/s)")
        if not size.get("complete"):
            failed.append(users)
    print(f"written to {args.out}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swapfl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a simulation (flwr run) and print its table")
    run.add_argument("--scenario", help="a TOML file or a name in simulations/scenarios/")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a run-config key (repeatable), e.g. --set users=4")
    run.add_argument("--cpus-per-device", type=int, default=1,
                     help="whole CPUs reserved per virtual device (Ray actor; Flower 1.41 "
                     "takes an integer)")
    run.add_argument("--timeout", type=float, default=None, help="seconds before giving up")
    run.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                     help="continue a stopped run from the first version not every device "
                     "completed, with its recorded configuration (no retraining of cached "
                     "releases, no duplicated rows)")
    add_ray_argument(run)
    run.set_defaults(func=cmd_run)
    report = sub.add_parser(
        "report", help="statistics, paired comparisons, paper-table analogues and plots "
        "(Markdown + CSV + PNG) from one or more run folders")
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    report.add_argument("--baseline", default="global",
                        help="strategy every other one is compared with, per user")
    report.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the run folder, or report-<time>/ "
                        "beside the first of several)")
    report.add_argument("--device-profile", default=None,
                        help="express costs as seconds and joules on a named device "
                        "(simulations/device_profiles.toml)")
    report.add_argument("--profiles", type=Path, default=None,
                        help="your own device-profile TOML (same format)")
    report.set_defaults(func=cmd_report)
    _bench_commands(sub)
    _deploy_commands(sub)
    analyze = sub.add_parser("analyze", help="simulation-only analyses of a finished run")
    analyses = analyze.add_subparsers(dest="analysis", required=True)
    cross = analyses.add_parser(
        "cross-user", help="every user's personalized model on every user's test split (FaLA "
        "Figure 2); opens every private store on this machine: outside the privacy boundary")
    cross.add_argument("run_dir", type=Path)
    cross.add_argument("--strategies", nargs="*", help="tracks to analyze (default: all)")
    cross.add_argument("--seed", type=int, default=None,
                       help="replicate seed whose stores to read (default: the run's first)")
    cross.add_argument("--out", type=Path, default=None,
                       help="output folder (default: RUN_DIR/cross-user)")
    cross.set_defaults(func=cmd_analyze_cross_user)
    strategies = sub.add_parser("strategies", help="list the registered strategies")
    strategies.set_defaults(func=cmd_strategies)
    tasks = sub.add_parser("tasks", help="list the registered tasks and their data formats")
    tasks.set_defaults(func=cmd_tasks)
    prep = sub.add_parser("prepare", help="generate/partition the run's data (the data owner's "
                          "step) and print the prepared folder (pass it as data-dir)")
    prep.add_argument("--scenario")
    prep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    prep.set_defaults(func=cmd_prepare)
    _data_commands(sub)
    return parser


def _bench_commands(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks: fala (FaLA fit time vs its forwards), "
                           "flops (FLOPs per strategy at BERT-base / RoBERTa-base scale), "
                           "scale (time and memory at 100 / 1,000 / 10,000 devices)")
    kinds = bench.add_subparsers(dest="benchmark", metavar="{fala,flops,scale}")
    bench.set_defaults(func=lambda args: bench.error(
        "choose a benchmark: 'swapfl bench fala' (FaLA fit time vs its frozen forwards) or "
        "'swapfl bench flops' (FLOPs per strategy; LoRA / FaLA ratios) or 'swapfl bench scale' "
        "(time and memory by device count)"))
    fala = kinds.add_parser("fala", help="FaLA fit time vs its frozen forwards (one user)")
    fala.add_argument("--scenario", help="a TOML file or a name in simulations/scenarios/")
    fala.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a run-config key (repeatable)")
    fala.add_argument("--repeats", type=int, default=5)
    fala.add_argument("--out", type=Path, default=Path("results/bench/fala-fit-vs-forwards.json"))
    fala.set_defaults(func=cmd_bench_fala)
    scale = kinds.add_parser(
        "scale", help="wall time per phase, seconds per device-version, messages/s and peak "
        "memory (PSS of the whole process tree) of real flwr runs at several device counts")
    scale.add_argument("--users", default="100,1000,10000",
                       help="device counts to run, comma-separated (default 100,1000,10000)")
    scale.add_argument("--scenario", default="scale-10k",
                       help="a TOML file or a name in simulations/scenarios/ (default "
                       "scale-10k: news, global + fala, GloVe -> BERT -> RoBERTa)")
    scale.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a run-config key (repeatable)")
    scale.add_argument("--out", type=Path, default=Path("results/bench/scale.json"))
    scale.add_argument("--cpus-per-device", type=int, default=1,
                       help="whole CPUs per virtual device (Ray actor)")
    scale.add_argument("--profile-devices", type=int, default=30,
                       help="devices per version whose handlers are profiled in-process after "
                       "each run (0: no profile)")
    scale.add_argument("--sample-seconds", type=float, default=1.0,
                       help="interval of the memory sampler")
    scale.add_argument("--timeout", type=float, default=None,
                       help="seconds before giving up on one size's run")
    scale.set_defaults(func=cmd_bench_scale)
    flops = kinds.add_parser("flops", help="forward/backward FLOPs of every gradient strategy "
                             "on random-init BERT-base and RoBERTa-base, FaLA's solve, and "
                             "total adaptation FLOPs per user LoRA vs FaLA in a scenario")
    flops.add_argument("--scenario", help="a TOML file or a name in simulations/scenarios/ "
                       "(default: the app's defaults)")
    flops.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a run-config key (repeatable), e.g. --set threads=2")
    flops.add_argument("--out", type=Path, default=Path("results/bench/flops.json"))
    flops.add_argument("--batch-size", type=int, default=32, help="texts per training step")
    flops.add_argument("--tokens", type=int, default=128, help="tokens per text")
    flops.add_argument("--users", type=int, default=1,
                       help="private users whose LoRA and FaLA fits are run in the scenario")
    flops.add_argument("--skip-default-scenario", action="store_true",
                       help="measure the per-step FLOPs only (no scenario run, no total ratio)")
    flops.set_defaults(func=cmd_bench_flops)


def _deploy_commands(sub: argparse._SubParsersAction) -> None:
    deploy = sub.add_parser(
        "deploy", help="a real deployment as local processes (SuperLink, SuperExecs, one "
        "SuperNode per device) on 127.0.0.1, with TLS and SuperNode authentication")
    verbs = deploy.add_subparsers(dest="verb", required=True)

    def verb(name: str, help: str, func) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help)
        parser.add_argument("--dir", type=Path, default=Path("deploy"),
                            help="the deployment folder (default: ./deploy)")
        parser.set_defaults(func=func)
        return parser

    prep = verb("prepare", "only the data owner's step: one data folder per device (and "
                "users.env for docker compose); no process is started", cmd_deploy_prepare)
    prep.add_argument("--scenario", help="a TOML file or a name in simulations/scenarios/")
    prep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    up = verb("up", "prepare the data per device, write credentials, start every process",
              cmd_deploy_up)
    up.add_argument("--scenario", help="a TOML file or a name in simulations/scenarios/")
    up.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a run-config key (repeatable); users = SuperNodes")
    up.add_argument("--insecure", action="store_true",
                    help="no TLS and no SuperNode authentication (debugging only)")
    run = verb("run", "flwr run the app on the deployment and print its table", cmd_deploy_run)
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a run-config key for this run, e.g. schedule=glove bert")
    run.add_argument("--timeout", type=float, default=None, help="seconds before giving up")
    verb("status", "which processes run (exit code 3 if any is down)", cmd_deploy_status)
    logs = verb("logs", "the last lines of one process's log", cmd_deploy_logs)
    logs.add_argument("service", help="e.g. superlink, superexec-server, supernode-1")
    logs.add_argument("-n", "--lines", type=int, default=40)
    restart = verb("restart", "stop and start one device's SuperNode and SuperExec",
                   cmd_deploy_restart)
    restart.add_argument("device", type=int, help="device number (1..users)")
    verb("down", "stop exactly the processes `up` started", cmd_deploy_down)


def _data_commands(sub: argparse._SubParsersAction) -> None:
    from tasks.registry import task_names

    data = sub.add_parser("data", help="generate, describe or convert a task's data files")
    verbs = data.add_subparsers(dest="verb", required=True)
    generate = verbs.add_parser("generate", help="write a synthetic world in the task's real "
                                "file format")
    generate.add_argument("--task", required=True, choices=task_names())
    generate.add_argument("--out", type=Path, required=True)
    generate.add_argument("--users", type=int, default=8, help="private users")
    generate.add_argument("--public-users", type=int, default=400)
    generate.add_argument("--items", type=int, default=40, help="items per private user")
    generate.add_argument("--documents", type=int, default=1200, help="shared documents")
    generate.add_argument("--seed", type=int, default=0)
    generate.set_defaults(func=cmd_data_generate)
    describe = verbs.add_parser("describe", help="counts of a task's files (real or "
                                "synthetic): items, users, labels, skipped rows")
    describe.add_argument("--task", required=True, choices=task_names())
    describe.add_argument("source", type=Path)
    describe.add_argument("--json", action="store_true", help="print JSON")
    describe.set_defaults(func=cmd_data_describe)
    convert = verbs.add_parser("convert", help="a Yelp or Amazon review dump -> the writers "
                               "task's writers.jsonl")
    convert.add_argument("--from", dest="source_format", required=True,
                         choices=("yelp", "amazon"))
    convert.add_argument("source", type=Path, help="review JSON-lines file (.json or .gz)")
    convert.add_argument("--out", type=Path, required=True)
    convert.add_argument("--classes", type=int, choices=(2, 3), default=3,
                         help="3: 1-2 negative, 3 neutral, 4-5 positive; 2: 3 stars dropped")
    convert.add_argument("--min-reviews", type=int, default=1,
                         help="keep writers with at least this many reviews")
    convert.set_defaults(func=cmd_data_convert)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s swapfl %(message)s",
                        datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("\ninterrupted: the processes this command started were stopped; a stopped run "
              "continues with `swapfl run --resume <out-dir>/<run>`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
