"""Command line: ``python -m benchmarks.reproduce [--mode full|quick|gpu] [--weights H5] [--data DIR] [...]``.

Examples (from the repository root)::

    .venv/bin/python -m benchmarks.reproduce --quick \\
        --weights ../shared/weights/mobilenet_v2_1.0_224_no_top.h5 --data ../shared/data/flowers5
    .venv/bin/python -m benchmarks.reproduce --data-large ../shared/data/flowers5_large   # full mode, another more-data set
    python -m benchmarks.reproduce --mode gpu   # on a GPU machine with the gpu extra: 224 px, the large datasets
    .venv/bin/python -m benchmarks.reproduce --render-only --out benchmarks/results/reproduce/full

Progress goes to stderr, one line per run; the paths written go to stdout.
Exit status 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time

from benchmarks.reproduce import SCHEMA
from benchmarks.reproduce.datasets import DecodedCache
from benchmarks.reproduce.experiments import EXPERIMENTS, Roles, Schedule
from benchmarks.reproduce.plan import DEFAULT_DATASETS, PLANS
from benchmarks.reproduce.report import write_report
from benchmarks.reproduce.runs import Context, Runner

DEFAULT_WEIGHTS = "../shared/weights/mobilenet_v2_1.0_224_no_top.h5"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(PLANS), default="full",
                        help="full (about 55 minutes on 2 idle cores; the default), quick (the under-10-minute preview: "
                             "4 of 6 experiments, 1 seed) or gpu (the paper's scale; needs a GPU); smoke is for tests")
    parser.add_argument("--quick", action="store_true", help="the same as --mode quick")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="MobileNetV2 1.0 no-top .h5 (default: %(default)s)")
    parser.add_argument("--data", help="near-domain class-folder dataset (default: ../shared/data/flowers5; "
                                       "flowers5_large in gpu mode)")
    parser.add_argument("--far-data", help="far-domain class-folder dataset (default: ../shared/data/eurosat, "
                                           "satellite tiles; eurosat_large in gpu mode)")
    parser.add_argument("--data-large", help="a larger dataset of the same task, for the 'more data' rows (default in "
                                             "full mode: ../shared/data/eurosat_large; --only without 'large' skips it)")
    parser.add_argument("--out", help="output folder (default: benchmarks/results/reproduce/<mode>)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(EXPERIMENTS)}")
    parser.add_argument("--fresh", action="store_true", help="ignore runs already in OUT/results.json")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite REPORT.md and the plot from OUT/results.json")
    args = parser.parse_args(argv)
    args.mode = "quick" if args.quick else args.mode
    args.data = args.data or DEFAULT_DATASETS[args.mode][0]
    args.far_data = args.far_data or DEFAULT_DATASETS[args.mode][1]
    args.out = args.out or os.path.join("benchmarks", "results", "reproduce", args.mode)
    experiments = tuple(e.strip() for e in args.only.split(",")) if args.only else EXPERIMENTS
    unknown = sorted(set(experiments) - set(EXPERIMENTS))
    if unknown:
        parser.error(f"--only takes names among {','.join(EXPERIMENTS)}. Received {','.join(unknown)}")
    args.experiments = experiments
    if args.data_large is None and "large" in experiments:
        args.data_large = DEFAULT_DATASETS[args.mode][2]
    if not args.render_only:
        for flag, path in (("--weights", args.weights), ("--data", args.data), ("--far-data", args.far_data),
                           ("--data-large", args.data_large)):
            if path is not None and not os.path.exists(path):
                parser.error(f"{flag} path '{path}' does not exist")
    return args


def _environment() -> dict:
    import keras
    import numpy
    import tensorflow

    gpus = [device.name for device in tensorflow.config.list_physical_devices("GPU")]
    machine = f"{os.cpu_count()} CPUs ({_cpu_model()}), {platform.machine()}, {platform.system()}"
    return {"machine": machine, "gpus": gpus,
            "load_at_start": round(os.getloadavg()[0], 2),
            "versions": {"python": platform.python_version(), "tensorflow": tensorflow.__version__,
                         "keras": keras.__version__, "numpy": numpy.__version__}}


def _cpu_model() -> str:
    """The CPU's model name: runs that train through the backbone can differ between hosts by float rounding."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _api_defaults() -> dict:
    """What ``edgepatch train`` uses when no flag is passed, for the defaults verdicts."""
    from benchmarks.reproduce.plan import TRANSFER_VARIANTS, VARIANTS
    from edgepatch.kinds import DEFAULT_BN_STATS, default_learning_rate

    return {"lr": {v: default_learning_rate(VARIANTS[v][0]) for v in TRANSFER_VARIANTS}, "bn_stats": DEFAULT_BN_STATS}


def _datasets(args) -> tuple[Roles, dict]:
    """Roles and per-dataset facts."""
    from edgepatch.train.data import scan_image_folders

    near = os.path.basename(os.path.normpath(args.data))
    far = os.path.basename(os.path.normpath(args.far_data))
    entries = {near: (args.data, f"`{args.data}` as given"), far: (args.far_data, f"`{args.far_data}` as given")}
    large = None
    if args.data_large:
        large = os.path.basename(os.path.normpath(args.data_large))
        entries[large] = (args.data_large, f"`{args.data_large}` as given (--data-large)")
    if len({near, far, large} - {None}) != len(entries):
        raise SystemExit(f"error: datasets need distinct folder names. Received {near}, {far}, {large}")
    facts = {}
    for name, (path, description) in entries.items():
        split = scan_image_folders(path)
        facts[name] = {"path": os.path.abspath(path), "description": description, "classes": len(split.classes),
                       "train_images": len(split.train), "test_images": len(split.test)}
    return Roles(near, far, large), facts


def _write_json(results: dict, path: str) -> None:
    temp = path + ".tmp"
    with open(temp, "w") as handle:
        json.dump(results, handle, indent=1)
    os.replace(temp, path)


def _previous_records(path: str, results: dict, fresh: bool) -> dict:
    """Records of an earlier invocation with the same weights and datasets, by key (a key fixes a run)."""
    if fresh or not os.path.isfile(path):
        return {}
    with open(path) as handle:
        previous = json.load(handle)
    same_data = all(previous.get("datasets", {}).get(name, info) == info for name, info in results["datasets"].items())
    if previous.get("schema") != SCHEMA or previous.get("weights") != results["weights"] or not same_data:
        raise SystemExit(f"error: '{path}' was written with another schema, weights or data; "
                         "pass --fresh or another --out")
    return {record["key"]: record for record in [*previous["runs"], *previous.get("pending_runs", [])]}


def main(argv=None) -> int:
    args = parse_args(argv)
    results_path = os.path.join(args.out, "results.json")
    if args.render_only:
        with open(results_path) as handle:
            results = json.load(handle)
        print("\n".join(write_report(results, args.out)))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    plan = PLANS[args.mode]()
    environment = _environment()
    if args.mode == "gpu" and not environment["gpus"]:
        print("error: --mode gpu needs a GPU and TensorFlow sees none (install the gpu extra: "
              "pip install -e '.[gpu]')", file=sys.stderr)
        return 2
    roles, facts = _datasets(args)
    if args.data_large is None and "large" in args.experiments:
        args.experiments = tuple(e for e in args.experiments if e != "large")
    os.makedirs(args.out, exist_ok=True)
    results = {"schema": SCHEMA, "command": shlex.join([sys.executable.split("/")[-1], "-m", "benchmarks.reproduce",
                                                         *(argv if argv is not None else sys.argv[1:])]),
               "plan": json.loads(json.dumps(plan.to_json())), "weights": args.weights,
               "roles": {"near": roles.near, "far": roles.far, "large": roles.large}, "datasets": facts,
               "experiments": list(args.experiments), "environment": environment, "api_defaults": _api_defaults(),
               "runs": [], "chosen_lrs": []}
    cache = DecodedCache()
    ctx = Context(args.weights, {name: info["path"] for name, info in facts.items()}, cache, plan.bn_momentum)
    schedule = None
    setup_seconds = time.perf_counter() - started

    def save(records: dict, finished: bool = False) -> None:
        results["runs"] = list(records.values())
        results["pending_runs"] = [] if finished else runner.pending()  # kept for a resumed invocation
        results["chosen_lrs"] = schedule.chosen_lrs() if schedule else []
        results["wall_seconds"] = round(time.perf_counter() - started, 1)
        results["run_seconds"] = round(sum(r["seconds"] for r in results["runs"]), 1)
        results["timing"] = {"setup_seconds": round(setup_seconds, 1),
                             "calls_seconds": round(runner.call_seconds, 1)}  # trained runs + release + save
        _write_json(results, results_path)

    runner = Runner(ctx, _previous_records(results_path, results, args.fresh), on_record=save)
    schedule = Schedule(plan, roles, runner, args.experiments)
    finished = False
    try:
        schedule.run_all()
        finished = True
    finally:
        save(runner.records, finished)
        results["decode_cache"] = {"hits": cache.hits, "misses": cache.misses}
        _write_json(results, results_path)
        if results["runs"]:
            paths = write_report(results, args.out)
            print("\n".join([results_path, *paths]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
