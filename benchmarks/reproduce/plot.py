"""The report's PNG: test accuracy vs trained parameters, and vs learning rate (matplotlib, Agg)."""

from __future__ import annotations

from benchmarks.reproduce import paper
from benchmarks.reproduce.plan import LABELS, TRANSFER_VARIANTS
from benchmarks.reproduce.tables import headline, summarize_runs, transfer_resolution, transfer_runs

MARKERS = {"near": "o", "far": "^", "large": "s"}


def _parameters_panel(axis, results: dict) -> None:
    for role, name in results["roles"].items():
        if not name:
            continue
        epochs = results["plan"]["large_epochs"] if role == "large" else results["plan"]["epochs"]
        for index, variant in enumerate(TRANSFER_VARIANTS):
            runs = headline(results, name, variant, epochs=epochs)
            if not runs:
                continue
            summary = summarize_runs(runs)
            axis.errorbar(runs[0]["trained_parameters"], summary.mean, yerr=summary.std, fmt=MARKERS[role],
                          color=f"C{index}", capsize=3, label=f"{LABELS[variant]}" if role == "near" else None)
            if role == "near":
                axis.annotate(variant, (runs[0]["trained_parameters"], summary.mean), textcoords="offset points",
                              xytext=(5, 4), fontsize=7)
    for variant, (accuracy, parameters) in paper.ANCHOR.items():
        axis.plot(parameters, accuracy, "x", color="grey", markersize=7)
    axis.plot([], [], "x", color="grey", label="plain-Keras anchor (128 px, 5 ep)")
    for role, marker in MARKERS.items():
        if results["roles"].get(role):
            axis.plot([], [], marker, color="black", fillstyle="none", label=f"{role}: {results['roles'][role]}")
    axis.set_xscale("log")
    axis.set_xlabel("trained parameters")
    axis.set_ylabel("test top-1 (%)")
    axis.set_title("Transfer: mean ± std over seeds at the chosen LR")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6, loc="lower right")


def _lr_panel(axis, results: dict) -> None:
    plan = results["plan"]
    for role, name in results["roles"].items():
        if not name or role == "large":
            continue
        for index, variant in enumerate(TRANSFER_VARIANTS):
            runs = transfer_runs(results, dataset=name, variant=variant, weights="imagenet", bn_stats="frozen",
                                 seed=plan["seeds"][0], resolution=transfer_resolution(results, name),
                                 epochs=plan["epochs"])
            if len(runs) < 2:
                continue
            axis.plot([r["lr"] for r in runs], [100 * r["test_accuracy"] for r in runs],
                      linestyle="-" if role == "near" else "--", marker=MARKERS[role], color=f"C{index}",
                      label=f"{LABELS[variant]} ({role})")
    axis.set_xscale("log")
    axis.set_xlabel("learning rate (Adam)")
    axis.set_ylabel("test top-1 (%)")
    axis.set_title(f"Learning rate, seed {plan['seeds'][0]}")
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=6)


def plot(results: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    _parameters_panel(axes[0], results)
    _lr_panel(axes[1], results)
    plan = results["plan"]
    figure.suptitle(f"MobileNetV2 1.0, {plan['resolution']} px, {plan['epochs']} epochs ({plan['mode']} mode)",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
