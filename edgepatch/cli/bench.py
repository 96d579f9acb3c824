"""``edgepatch bench``: latency per resolution, init, swap and memory of a base and its deltas.

A thin command over ``edgepatch.apps.bench``: it validates the options, runs the
measurement with a progress bar on stderr, prints a table (or JSON) on
stdout and optionally writes a CSV and a PNG plot.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys

import click

from edgepatch.apps.bench import (
    EXTENSIONS,
    ONNX_SWAP_MODES,
    RUNTIMES,
    BenchConfig,
    run_bench,
)
from edgepatch.cli.options import result_output
from edgepatch.errors import MissingFileError, UsageError, WrongBaseError

CSV_FIELDS = ("runtime", "resolution", "threads", "onnx_swap", "task", "model_bytes", "delta_bytes", "init_ms",
              "first_inference_ms", "latency_ms.median", "latency_ms.p90", "latency_ms.min",
              "base_latency_ms.median", "patched_vs_base", "swap_ms.median", "swap_ms.min", "read_ms",
              "apply_ms", "switch_hit_ms.median", "resident_task_mib", "resident_task_accounted_mib",
              "import_rss_mib", "peak_rss_mib")


def _int_list(value: str, option: str, low: int, high: int) -> tuple[int, ...]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items or not all(v.isdigit() and low <= int(v) <= high for v in items):
        raise UsageError(f"{option} must be comma-separated integers in {low}..{high}. Received '{value}'")
    return tuple(dict.fromkeys(int(v) for v in items))


def _runtimes(value: str | None, available: list[str]) -> tuple[str, ...]:
    if value is None:
        return tuple(available)
    items = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if not items or any(v not in RUNTIMES for v in items):
        raise UsageError(f"--runtimes must be a non-empty subset of {list(RUNTIMES)}. Received '{value}'")
    return items


def resolve_bases(base: str, runtimes: str | None) -> dict[str, str]:
    """--base FILE (its extension names the runtime) or DIR (DIR/base.tflite, DIR/base.onnx)."""
    if os.path.isdir(base):
        found = {rt: os.path.join(base, f"base{ext}") for rt, ext in EXTENSIONS.items()}
        available = [rt for rt, path in found.items() if os.path.isfile(path)]
        if not available:
            raise MissingFileError(f"--base directory '{base}' holds neither base.tflite nor base.onnx")
    elif os.path.isfile(base):
        runtime = next((rt for rt, ext in EXTENSIONS.items() if base.lower().endswith(ext)), None)
        if runtime is None:
            raise UsageError(f"--base must be a .tflite or .onnx file or a directory. Received '{base}'")
        found, available = {runtime: base}, [runtime]
    else:
        raise MissingFileError(f"--base '{base}' does not exist")
    chosen = _runtimes(runtimes, available)
    for runtime in chosen:
        if runtime not in available:
            raise MissingFileError(f"--runtimes names {runtime}, but there is no {runtime} base at '{base}'")
    return {runtime: found[runtime] for runtime in chosen}


def _check_deltas(deltas: tuple[str, ...], bases: dict[str, str], pubkeys: tuple[str, ...] = ()) -> None:
    """Read each delta once here, so a bad one (or, with ``pubkeys``, an unsigned one) is one line before any measuring."""
    from edgepatch.format.signature import trusted_keys
    from edgepatch.runtime import read_task_delta

    trusted = trusted_keys(list(pubkeys)) if pubkeys else None

    with_sha = {}
    for runtime, path in bases.items():
        with open(path, "rb") as handle:
            with_sha[runtime] = hashlib.sha256(handle.read()).hexdigest()
    for path in deltas:
        delta = read_task_delta(path, trusted)
        fingerprints = delta.base_sha256 if isinstance(delta.base_sha256, dict) else {"tflite": delta.base_sha256}
        for runtime, sha in with_sha.items():
            if fingerprints.get(runtime) != sha:
                raise WrongBaseError(f"delta '{path}' (task '{delta.task.name}') was not made for the "
                                     f"{runtime} base '{bases[runtime]}'")


def _flat(row: dict) -> dict:
    flat = {}
    for name in CSV_FIELDS:
        key, _, part = name.partition(".")
        value = row.get(key)
        flat[name] = value.get(part) if part and isinstance(value, dict) else (None if part else value)
    return flat


def write_csv(path: str, result: dict) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in result["results"]:
            writer.writerow(_flat(row))


def write_plot(path: str, result: dict) -> None:
    """Median latency vs resolution, one line per (runtime, threads); the band spans min..p90."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    lines: dict[tuple, list] = {}
    for row in result["results"]:
        lines.setdefault((row["runtime"], row["threads"]), []).append(row)
    colors = {"tflite": "tab:green", "onnx": "tab:blue"}
    styles = ["-", "--", ":", "-."]
    thread_counts = sorted({threads for _, threads in lines})
    for (runtime, threads), rows in sorted(lines.items()):
        rows.sort(key=lambda r: r["resolution"])
        x = [r["resolution"] for r in rows]
        label = f"{runtime}" + (f" ({rows[0]['onnx_swap']})" if runtime == "onnx" else "") + f", {threads} thread(s)"
        style = dict(color=colors.get(runtime), linestyle=styles[thread_counts.index(threads) % len(styles)])
        axes.plot(x, [r["latency_ms"]["median"] for r in rows], marker="o", label=label, **style)
        axes.fill_between(x, [r["latency_ms"]["min"] for r in rows], [r["latency_ms"]["p90"] for r in rows],
                          color=style["color"], alpha=0.12)
    task = next((r["task"] for r in result["results"] if r["task"]), None)
    axes.set_title(f"Latency per resolution (batch 1, task: {task or 'base'})")
    axes.set_xlabel("input resolution (px)")
    axes.set_ylabel("latency (ms): median, band min..p90")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def render(result: dict) -> str:
    header = (f"{'runtime':14} {'res':>4} {'thr':>3} {'init ms':>8} {'first ms':>8} {'median':>8} {'p90':>8} "
              f"{'min':>8} {'vs base':>7} {'swap ms':>8} {'hit ms':>7} {'peak MiB':>8}")
    lines = [header]
    for r in result["results"]:
        name = r["runtime"] + (f"/{r['onnx_swap']}" if r["onnx_swap"] else "")
        ratio = f"{r['patched_vs_base']:.3f}" if r["patched_vs_base"] is not None else "-"
        swap = f"{r['swap_ms']['median']:.2f}" if r["swap_ms"] else "-"
        hit = f"{r['switch_hit_ms']['median']:.3f}" if r["switch_hit_ms"] else "-"
        lines.append(f"{name:14} {r['resolution']:>4} {r['threads']:>3} {r['init_ms']:>8.1f} "
                     f"{r['first_inference_ms']:>8.2f} {r['latency_ms']['median']:>8.3f} {r['latency_ms']['p90']:>8.3f} "
                     f"{r['latency_ms']['min']:>8.3f} {ratio:>7} {swap:>8} {hit:>7} {r['peak_rss_mib']:>8.1f}")
    lines.append(f"({len(result['results'])} configurations in {result['total_seconds']:.1f} s)")
    return "\n".join(lines)


@click.command()
@click.option("--base", "base", required=True, help="A base file (.tflite/.onnx) or a directory holding base.tflite/base.onnx.")
@click.option("--delta", "deltas", multiple=True, help="A task delta (repeat for more); swaps cycle through them.")
@click.option("--resolutions", default="96,128,160,192,224", show_default=True, help="Square input sizes.")
@click.option("--runtimes", default=None, help="tflite,onnx (default: every base found).")
@click.option("--threads", default="1,2", show_default=True, help="Thread counts.")
@click.option("--runs", default=100, show_default=True, type=click.IntRange(1, 100000), help="Timed runs per configuration.")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(0, 100000), help="Untimed runs first.")
@click.option("--onnx-swap", default="rebuild", show_default=True, type=click.Choice(ONNX_SWAP_MODES),
              help="ONNX swap mode: rebuild (a new session per task, from ORT's optimized model) or adapter (one session, weights as inputs).")
@click.option("--csv", "csv_path", default=None, help="Also write one CSV row per configuration to this file.")
@click.option("--plot", "plot_path", default=None, help="Also write a PNG plot of latency vs resolution.")
@click.option("--pubkey", "pubkeys", multiple=True,
              help="Trusted public key (PEM; repeat for rotation): every --delta needs a valid DELTA.sig by one of them.")
@result_output(render)
def bench(base, deltas, resolutions, runtimes, threads, runs, warmup, onnx_swap, csv_path, plot_path, pubkeys):
    """Measure latency per resolution, init, first run, swap time and peak RSS.

    Each (runtime, resolution, threads) runs in a fresh process. With deltas,
    the first delta's task is measured against the untouched base, and swaps
    (delta file -> ready runner) cycle through all of them.

    \b
    Example:
      edgepatch bench --base ship/ --delta ship/flowers.delta --plot latency.png
    """
    bases = resolve_bases(base, runtimes)
    config = BenchConfig(bases, tuple(deltas), _int_list(resolutions, "--resolutions", 32, 1024),
                         tuple(bases), _int_list(threads, "--threads", 1, 64), runs, warmup, onnx_swap,
                         swaps=min(runs, 10))
    for path in deltas:
        if not os.path.isfile(path):
            raise MissingFileError(f"--delta '{path}' does not exist")
    _check_deltas(config.deltas, bases, pubkeys)
    for path, what in ((csv_path, "--csv"), (plot_path, "--plot")):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise MissingFileError(f"{what}: directory of '{path}' does not exist")
    total = len(config.resolutions) * len(config.threads) * len(config.runtimes)
    with click.progressbar(length=total, label="bench", file=sys.stderr,
                           item_show_func=lambda text: text) as bar:
        result = run_bench(config, lambda done, _, spec: bar.update(
            1, f"{spec.runtime} {spec.resolution}px {spec.threads}t"))
    if csv_path:
        write_csv(csv_path, result)
    if plot_path:
        write_plot(plot_path, result)
    return result


if __name__ == "__main__":
    bench()
