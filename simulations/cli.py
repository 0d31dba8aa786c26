"""``swapfl``: run simulations, prepare data, print reports, list strategies."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from simulations.launcher import APP_DIR, run_simulation

PATH_KEYS = ("work-dir", "out-dir")
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
    return merged


def cmd_run(args: argparse.Namespace) -> int:
    config = resolve_run_config(args.scenario, args.set, app_defaults())
    nodes = int(config["users"])
    logging.info("running %d virtual devices; results under %s", nodes, config["out-dir"])
    started = time.perf_counter()
    code = run_simulation(config, nodes, cpus_per_node=args.cpus_per_device,
                          timeout=args.timeout)
    logging.info("simulation finished in %.1fs with exit code %d",
                 time.perf_counter() - started, code)
    runs = sorted(Path(config["out-dir"]).glob("*/table.md"), key=lambda p: p.stat().st_mtime)
    if code == 0 and runs and runs[-1].stat().st_mtime >= time.time() - (
            time.perf_counter() - started):
        print(f"\nresults: {runs[-1].parent}\n")
        print(runs[-1].read_text())
        return 0
    print("the simulation did not produce a results table; see the log above", file=sys.stderr)
    return code or 1


def cmd_report(args: argparse.Namespace) -> int:
    from simulations.report import write_report

    md = write_report(args.run_dir)
    print(md.read_text())
    return 0


def cmd_strategies(args: argparse.Namespace) -> int:
    from strategies.registry import describe

    for name, text in describe().items():
        print(f"{name:20s} {text}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from simulations.bench import run_benchmarks

    config = resolve_run_config(args.scenario, args.set, app_defaults())
    results = run_benchmarks(config, args.out, args.repeats)
    for swap, r in results.items():
        print(f"{swap}: FaLA fit {r['fit-seconds-median']:.3f}s, frozen forwards "
              f"{r['forwards-seconds-median']:.3f}s -> ratio {r['fit-over-forwards']:.3f} "
              f"({r['examples']} examples, {r['documents-forwarded']} documents)")
    print(f"written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swapfl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a simulation (flwr run) and print its table")
    run.add_argument("--scenario", help="a TOML file or a name in simulations/scenarios/")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a run-config key (repeatable), e.g. --set users=4")
    run.add_argument("--cpus-per-device", type=float, default=1.0,
                     help="CPUs reserved per virtual device (Ray actor)")
    run.add_argument("--timeout", type=float, default=None, help="seconds before giving up")
    run.set_defaults(func=cmd_run)
    report = sub.add_parser("report", help="tables (Markdown + CSV) from a run folder")
    report.add_argument("run_dir", type=Path)
    report.set_defaults(func=cmd_report)
    bench = sub.add_parser("bench", help="FaLA fit time vs its frozen forwards (one user)")
    bench.add_argument("--scenario")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--out", type=Path, default=Path("results/bench/fala-fit-vs-forwards.json"))
    bench.set_defaults(func=cmd_bench)
    strategies = sub.add_parser("strategies", help="list the registered strategies")
    strategies.set_defaults(func=cmd_strategies)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s swapfl %(message)s",
                        datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
