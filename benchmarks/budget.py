"""Accuracy vs parameter budget, per selector: patches that keep only some S/B layers private.

For each dataset and seed it trains, from ImageNet MobileNetV2 1.0, the full S/B + last patch
(the 100% point), the last layer alone, and for every budget (a share of the S/B parameters;
the head is private throughout and not counted) one patch per selector. Every run uses the same
training settings (``edgepatch train``'s defaults unless given); only the chosen layers differ.
Delta bytes are the encoded float32 delta of each run (the bytes ``convert`` writes for it).

    python benchmarks/budget.py --weights ../shared/weights/mobilenet_v2_1.0_224_no_top.h5 \
        --data ../shared/data/eurosat@64 --data ../shared/data/flowers5@96

Writes ``results/budget.json`` after every run (a restarted run skips what is done) and
``results/budget.png``: test accuracy (mean, min-max band over seeds) vs budget per selector,
with delta KB on the second axis.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HERE = os.path.dirname(os.path.abspath(__file__))
FULL, LAST_LAYER = "full_sb_last", "last_layer"


def _run_key(dataset: str, seed: int, variant: str, budget: float | None) -> str:
    return f"{dataset}|{seed}|{variant}|{budget}"


def train_one(weights, data, resolution, seed, variant, budget, epochs, cache) -> dict:
    """One training run; returns accuracy, parameters and delta bytes."""
    from converters.fold import fold_batchnorm
    from converters.make_delta import make_delta
    from edgepatch.format.delta import encode_delta
    from edgepatch.format.task import TaskInfo
    from edgepatch.kinds.keras_sites import find_sites
    from edgepatch.train.data import scan_image_folders
    from edgepatch.train.models import build_classifier
    from edgepatch.train.preprocessing import PREPROCESSING_MODES
    from edgepatch.train.transfer import TrainConfig, train

    split = scan_image_folders(data, seed=seed)
    task = TaskInfo(os.path.basename(os.path.normpath(data)), split.classes, resolution, PREPROCESSING_MODES["tf"])
    model = build_classifier("mobilenet_v2", alpha=1.0, resolution=resolution, weights=weights,
                             num_classes=len(split.classes), seed=seed)
    base_folded = fold_batchnorm(model)
    kinds = ("logits",) if variant == LAST_LAYER else ("scale_bias", "logits")
    config = TrainConfig(trained=kinds, epochs=epochs, seed=seed,
                         budget=None if budget is None else f"{budget:g}%", selector=variant if budget else "score")
    start = time.perf_counter()
    result = train(model, split, task, config, verbose=0, pipeline=cache.make_dataset)
    seconds = time.perf_counter() - start
    patch = result.patch
    delta = make_delta(find_sites(model), base_folded, fold_batchnorm(model), task, patch.kinds,
                       {"tflite": "0" * 64}, patch.selection)
    return {"test_accuracy": result.test_accuracy, "train_accuracy": result.train_accuracy,
            "trained_parameters": result.trained_parameters, "delta_bytes": len(encode_delta(delta, "float32", "-")),
            "delta_sites": len(delta.sites), "seconds": round(seconds, 1),
            **{k: patch.training[k] for k in ("selected_parameters", "full_parameters", "selected_layers")
               if k in patch.training}}


def summarize(runs: dict, datasets, selectors, budgets, seeds) -> dict:
    """Mean/min/max per (dataset, variant, budget), and the issue's checks at each budget."""
    out = {}
    for dataset in datasets:
        def accuracies(variant, budget):
            return [runs[k]["test_accuracy"] for s in seeds if (k := _run_key(dataset, s, variant, budget)) in runs]

        def stats(variant, budget):
            values = accuracies(variant, budget)
            sizes = [runs[k]["delta_bytes"] for s in seeds if (k := _run_key(dataset, s, variant, budget)) in runs]
            return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "seeds": len(values),
                    "delta_bytes": statistics.fmean(sizes)} if values else None

        table = {FULL: stats(FULL, None), LAST_LAYER: stats(LAST_LAYER, None)}
        for selector in selectors:
            table[selector] = {f"{b:g}": stats(selector, b) for b in budgets}
        checks = {}
        for b in budgets:
            learned = {s: table[s][f"{b:g}"] for s in selectors if s in ("score", "learned") and table[s][f"{b:g}"]}
            if not learned or not table[FULL]:
                continue
            best = max(learned, key=lambda s: learned[s]["mean"])
            per_seed = {s: accuracies(s, b) for s in selectors}
            wins = {other: all(x - y >= 0.0 for x, y in zip(per_seed[best], per_seed[other]))
                    for other in ("random", "last") if other in selectors and per_seed[other]}
            margin = {other: learned[best]["mean"] - table[other][f"{b:g}"]["mean"]
                      for other in wins}
            checks[f"{b:g}"] = {"best_selector": best, "best_mean": learned[best]["mean"],
                                "gap_to_full_sb_last": table[FULL]["mean"] - learned[best]["mean"],
                                "margin_over": margin, "every_seed_wins_over": wins,
                                "delta_vs_full": learned[best]["delta_bytes"] / table[FULL]["delta_bytes"]}
        out[dataset] = {"table": table, "checks": checks}
    return out


def plot(summary: dict, selectors, budgets, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(6.2 * len(summary), 4.4), squeeze=False)
    for ax, (dataset, data) in zip(axes[0], summary.items()):
        table = data["table"]
        for selector in selectors:
            points = [(b, table[selector][f"{b:g}"]) for b in budgets if table[selector][f"{b:g}"]]
            if points:
                xs = [b for b, _ in points] + ([100] if table[FULL] else [])
                ms = [p["mean"] for _, p in points] + ([table[FULL]["mean"]] if table[FULL] else [])
                lo = [p["min"] for _, p in points] + ([table[FULL]["min"]] if table[FULL] else [])
                hi = [p["max"] for _, p in points] + ([table[FULL]["max"]] if table[FULL] else [])
                ax.plot(xs, ms, marker="o", label=selector)
                ax.fill_between(xs, lo, hi, alpha=0.12)
        if table[LAST_LAYER]:
            ax.axhline(table[LAST_LAYER]["mean"], color="grey", linestyle="--", label="last layer only")
        ax.set_xscale("log")
        ax.set_xticks([*budgets, 100], [f"{b:g}%" for b in [*budgets, 100]])
        ax.set_xlabel("private S/B parameters (% of all; head private throughout)")
        ax.set_ylabel("test accuracy (mean, band: min-max over seeds)")
        ax.set_title(dataset)
        ax.legend(loc="lower right", fontsize=8)
        sizes = ax.twinx()
        any_selector = next(s for s in selectors if table[s][f"{budgets[0]:g}"])
        xs = [b for b in budgets if table[any_selector][f"{b:g}"]] + [100]
        kb = [table[any_selector][f"{b:g}"]["delta_bytes"] / 1024 for b in xs[:-1]] + [table[FULL]["delta_bytes"] / 1024]
        sizes.plot(xs, kb, color="black", linestyle=":", marker="x", label="delta KB")
        sizes.set_ylabel("delta KB (float32; dotted)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="MobileNetV2 1.0 no-top .h5 (../shared/weights/...)")
    parser.add_argument("--data", action="append", required=True, help="DIR@RESOLUTION, repeatable")
    parser.add_argument("--budgets", default="5,10,25,50")
    parser.add_argument("--selectors", default="score,learned,last,random")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "budget.json"))
    parser.add_argument("--plot", default=os.path.join(HERE, "results", "budget.png"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from benchmarks.reproduce.datasets import DecodedCache

    budgets = [float(b) for b in args.budgets.split(",")]
    selectors = args.selectors.split(",")
    seeds = list(range(args.seeds))
    sets = [(d.rpartition("@")[0], int(d.rpartition("@")[2])) for d in args.data]
    names = [os.path.basename(os.path.normpath(d)) for d, _ in sets]
    record = json.load(open(args.out)) if os.path.exists(args.out) else {"runs": {}}
    runs = record["runs"]
    cache = DecodedCache()
    plan = [(name, d, r, seed, variant, budget) for (d, r), name in zip(sets, names) for seed in seeds
            for variant, budget in [(FULL, None), (LAST_LAYER, None), *((s, b) for b in budgets for s in selectors)]]
    for name, data, resolution, seed, variant, budget in plan:
        key = _run_key(name, seed, variant, budget)
        if key in runs:
            continue
        runs[key] = {"resolution": resolution, **train_one(args.weights, data, resolution, seed, variant, budget,
                                                          args.epochs, cache)}
        print(key, json.dumps(runs[key]), file=sys.stderr, flush=True)
        record.update(settings={"model": "MobileNetV2 1.0 (ImageNet)", "epochs": args.epochs, "batch_size": 32,
                                "learning_rate": 1e-3, "bn_stats": "frozen", "budgets_percent": budgets,
                                "selectors": selectors, "seeds": seeds},
                      summary=summarize(runs, names, selectors, budgets, seeds))
        with open(args.out + ".tmp", "w") as handle:
            json.dump(record, handle, indent=1, sort_keys=True)
        os.replace(args.out + ".tmp", args.out)
    plot(record["summary"], selectors, budgets, args.plot)
    print(json.dumps({n: record["summary"][n]["checks"] for n in names}, indent=1))


if __name__ == "__main__":
    main()
