"""Render the results dict as REPORT.md and a PNG plot; both come from results.json alone."""

from __future__ import annotations

import os

from benchmarks.reproduce import paper
from benchmarks.reproduce.claims import all_verdicts
from benchmarks.reproduce.plan import LABELS, TRANSFER_VARIANTS
from benchmarks.reproduce.tables import (
    MIXED,
    NOT_HELD,
    headline,
    multi_runs,
    multires_runs,
    summarize,
    summarize_runs,
    transfer_resolution,
    transfer_runs,
)

PLOT_NAME = "accuracy_vs_parameters.png"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _text(summary) -> str:
    return summary.text() if summary is not None else "not run"


def _seeds(runs) -> str:
    return ",".join(str(r["seed"]) for r in runs) or "-"


def _transfer_table(results: dict, role: str, name: str) -> str:
    plan = results["plan"]
    near = role == "near"
    epochs = plan["large_epochs"] if role == "large" else plan["epochs"]
    full = headline(results, name, "full") or headline(results, results["roles"]["near"], "full")
    full_params = full[0]["trained_parameters"] if full else None
    rows = []
    for variant in TRANSFER_VARIANTS:
        runs = headline(results, name, variant, epochs=epochs)
        if not runs:
            continue
        sweep = transfer_runs(results, dataset=name, variant=variant, weights="imagenet", bn_stats="frozen",
                              seed=plan["seeds"][0], resolution=transfer_resolution(results, name), epochs=epochs)
        tried = ", ".join(f"{r['lr']:g}: {100 * r['test_accuracy']:.1f}" for r in sweep) if len(sweep) > 1 else "-"
        params = runs[0]["trained_parameters"]
        share = f"{100 * params / full_params:.2f}%" if full_params else "-"
        summary = summarize_runs(runs)
        row = [LABELS[variant], f"{params:,}", share, tried, f"{runs[0]['lr']:g}", _text(summary),
               f"{100 * statistics_mean(runs, 'train_accuracy'):.1f}"]
        if near:
            anchor = paper.ANCHOR.get(variant)
            comparable = (runs[0]["resolution"], runs[0]["epochs"]) == (128, 5)
            delta = f" ({summary.mean - anchor[0]:+.1f})" if anchor and comparable else ""
            row += [f"{anchor[0]:.1f}{delta}" if anchor else "-"]
        row += [paper.TABLE2.get(variant) or paper.FIGURE3.get(variant, "-"), runs[0]["resolution"],
                runs[0]["epochs"], _seeds(runs)]
        rows.append(row)
    if not rows:
        return "Not run."
    header = ["variant", "trained params", "% of full", "LR sweep (seed-0 test %)", "LR", "test top-1 %",
              "train %"]
    header += ["anchor, 128 px 5 ep (Δ ours)"] if near else []
    header += ["paper, table 2 (Flowers / Cars / Aircraft)", "res", "epochs", "seeds"]
    return _table(header, rows)


def statistics_mean(runs: list[dict], field: str) -> float:
    return sum(r[field] for r in runs) / len(runs)


def _lr_table(results: dict) -> str:
    plan, rows = results["plan"], []
    for role, name in results["roles"].items():
        if not name or role == "large":
            continue
        for variant in ("full", "sb+last", "last", "sb", "dw+last", "sb+dw+last"):
            runs = transfer_runs(results, dataset=name, variant=variant, weights="imagenet", bn_stats="frozen",
                                 seed=plan["seeds"][0], resolution=plan["resolution"], epochs=plan["epochs"])
            if len(runs) > 1:
                rows.append([name, LABELS[variant], ", ".join(f"{r['lr']:g} → {100 * r['test_accuracy']:.1f}"
                                                              for r in runs), plan["resolution"], plan["epochs"],
                             plan["seeds"][0]])
    if not rows:
        return "No sweep with two or more learning rates was run."
    return _table(["dataset", "variant", "LR → test top-1 %", "res", "epochs", "seed"], rows)


def _random_table(results: dict) -> str:
    plan, near, rows = results["plan"], results["roles"]["near"], []
    for variant, bn in (("last", "frozen"), ("last+stats", "frozen"), ("sb+last", "reestimate"), ("sb", "reestimate")):
        runs = transfer_runs(results, dataset=near, variant=variant, weights="random", bn_stats=bn,
                             resolution=plan["random_resolution"], epochs=plan["random_epochs"], lr=plan["random_lr"])
        if runs:
            rows.append([LABELS[variant], bn, f"{runs[0]['trained_parameters']:,}", _text(summarize_runs(runs)),
                         paper.TABLE3_RANDOM.get(variant, "-"), runs[0]["resolution"], runs[0]["epochs"],
                         f"{runs[0]['lr']:g}", _seeds(runs)])
    return _table(["variant", "bn_stats", "trained params", "test top-1 %", "paper, table 3 (ImageNet)", "res",
                   "epochs", "LR", "seeds"], rows)


def _bn_table(results: dict) -> str:
    rows = []
    for role, name in results["roles"].items():
        if not name or role == "large":
            continue
        last = headline(results, name, "last")
        entries = [("last", "frozen", last), ("last+stats", "frozen",
                                               headline(results, name, "last+stats", lr=last[0]["lr"]) if last else [])]
        entries += [("sb+last", mode, headline(results, name, "sb+last", bn_stats=mode))
                    for mode in ("frozen", "reestimate", "momentum")]
        for variant, mode, runs in entries:
            if runs:
                quoted = paper.TABLE6.get(variant, "-") if mode in ("frozen", "reestimate") else "-"
                if variant == "sb+last" and mode == "frozen":
                    quoted = "-"
                rows.append([name, LABELS[variant], mode, _text(summarize_runs(runs)), quoted,
                             runs[0]["resolution"], runs[0]["epochs"], f"{runs[0]['lr']:g}", _seeds(runs)])
    return _table(["dataset", "variant", "bn_stats", "test top-1 %", ("paper, table 6 (Flowers / Aircraft / Cars / "
                   "CIFAR-100)"), "res", "epochs", "LR", "seeds"], rows)


def _multi_summary(runs: list[dict], index: int, field: str = "test_accuracy"):
    return summarize([r["results"][index][field] for r in runs], [r["seed"] for r in runs])


def _multi_cell(runs: list[dict], index: int) -> str:
    """Test accuracy over seeds, with the API's own figure (before any shared re-estimation) in brackets."""
    api = _multi_summary(runs, index, "api_test_accuracy")
    return f"{_text(_multi_summary(runs, index))} [API: {api.mean:.1f}]"


def _multitask_table(results: dict) -> str:
    rows = []
    for config in ("sb+last private", "last private", "independent"):
        runs = [r for r in multi_runs(results, config=config, epochs=results["plan"]["multitask_epochs"])
                if len(r["tasks"]) == 2 and r["tasks"][0]["resolution"] == r["tasks"][1]["resolution"]]
        if not runs:
            continue
        cells = [_multi_cell(runs, i) for i in range(2)]
        quoted, quoted_params = paper.TABLE4[config]
        rows.append([config, *cells, f"{runs[0]['total_parameters']:,}", quoted, quoted_params,
                     runs[0]["tasks"][0]["resolution"], runs[0]["epochs"], f"{runs[0]['lr']:g}", _seeds(runs)])
    if not rows:
        return "Not run (needs a far-domain dataset)."
    names = [t["dataset"] for t in multi_runs(results, config="sb+last private")[0]["tasks"]] \
        if multi_runs(results, config="sb+last private") else ["task 1", "task 2"]
    return _table(["config", f"{names[0]} %", f"{names[1]} %", "total params", "paper (ImageNet / Places365)",
                   "paper params", "res", "epochs", "LR", "seeds"], rows)


def _multires_table(results: dict) -> str:
    plan = results["plan"]
    runs = {c: multires_runs(results, c) for c in ("sb private", "all shared", "independent")}
    if not runs["sb private"] or not runs["all shared"]:
        return "Not run."
    rows = []
    for index, res in enumerate(plan["multires_resolutions"]):
        cells = [_multi_cell(runs[c], index) if runs[c] else "not run" for c in runs]
        quoted = paper.TABLE5.get(res)
        rows.append([f"{res} px", *cells, " / ".join(f"{q:g}" for q in quoted) if quoted else "-"])
    rows.append(["total params", *[f"{runs[c][0]['total_parameters']:,}" if runs[c] else "-" for c in runs],
                 " / ".join(paper.TABLE5_PARAMETERS)])
    first = runs["sb private"][0]
    caption = (f"{first['tasks'][0]['dataset']}, epochs {first['epochs']}, LR {first['lr']:g}, "
               f"seeds {_seeds(runs['sb private'])}.")
    return caption + "\n\n" + _table(["resolution", "S/B private %", "all shared %", "independent %",
                                      "paper: S/B / shared / indep. (ImageNet)"], rows)


def _verdict_table(verdicts) -> str:
    rows = [[v.claim, v.regime, v.paper, v.ours, f"**{v.verdict}**", ",".join(map(str, v.seeds)) or "-"]
            for v in verdicts]
    return _table(["claim", "regime", "paper", "ours", "verdict", "seeds"], rows)


def _disagreements(verdicts) -> str:
    lines = [f"- **{v.verdict}**: {v.claim} — {v.regime}. Paper: {v.paper}. Ours: {v.ours}."
             for v in verdicts if v.verdict in (NOT_HELD, MIXED)]
    return "\n".join(lines) or "- None: every claim that ran held."


def _runs_table(results: dict) -> str:
    rows = []
    for r in results["runs"]:
        if r["kind"] == "transfer":
            rows.append([r["dataset"], LABELS.get(r["variant"], r["variant"]), r["weights"], r["bn_stats"],
                         r["resolution"], r["epochs"], f"{r['lr']:g}", r["seed"], f"{100 * r['train_accuracy']:.1f}",
                         f"{100 * r['test_accuracy']:.1f}", f"{r['trained_parameters']:,}", r["seconds"]])
        else:
            tasks = " + ".join(f"{t['dataset']}@{t['resolution']}" for t in r["results"])
            accuracies = " / ".join(f"{100 * t['test_accuracy']:.1f}" for t in r["results"])
            trains = " / ".join(f"{100 * t['train_accuracy']:.1f}" for t in r["results"])
            resolutions = "/".join(str(t["resolution"]) for t in r["results"])
            rows.append([tasks, r["config"], "imagenet", "train mode", resolutions,
                         r["epochs"], f"{r['lr']:g}", r["seed"], trains, accuracies,
                         f"{r['total_parameters']:,} total", r["seconds"]])
    return _table(["dataset", "variant / config", "weights", "bn_stats", "res", "epochs", "LR", "seed", "train %",
                   "test %", "params", "seconds"], rows)


def _setup(results: dict) -> str:
    plan, data = results["plan"], results["datasets"]
    env = results["environment"]
    lines = [(f"- Mode **{plan['mode']}**; {len(results['runs'])} runs taking {results.get('run_seconds', 0) / 60:.1f} "
              f"min in all (sum of run times, runs reused from an earlier invocation included); the last invocation "
              f"took {results.get('wall_seconds', 0) / 60:.1f} min wall on {env.get('machine', '?')}"
              f"{' with ' + ', '.join(env['gpus']) if env.get('gpus') else ' (no GPU)'}, load average "
              f"{env.get('load_at_start', '?')} at its start."),
             f"- Command: `{results.get('command', '?')}`",
             f"- Weights: `{results['weights']}` (ImageNet MobileNetV2 1.0). Versions: "
             + ", ".join(f"{k} {v}" for k, v in results["environment"].get("versions", {}).items()) + "."]
    for role, name in results["roles"].items():
        if name:
            info = data[name]
            lines.append(f"- **{role}** dataset `{name}`: {info['train_images']} train / {info['test_images']} test "
                         f"images, {info['classes']} classes; {info['description']}")
    lines += [
        (f"- Optimizer: the training API's Adam with a constant LR (batch {plan['batch_size']}); multi-task runs use "
        "`train_multitask`'s Adam with decay 0.98 per 2.5 epochs. The paper used RMSProp 0.045."),
        (f"- Learning rates: swept at seed {plan['seeds'][0]}, chosen by that seed's test accuracy (ties: train "
        "accuracy, then the smaller LR). This favours seed "
        f"{plan['seeds'][0]} a little; the other seeds are fresh at the chosen LR."),
        ("- BN statistics: `frozen` (the API default) unless a row says otherwise; `reestimate` trains on batch "
        "statistics and re-estimates them after training; `momentum` trains with momentum "
        f"{plan['bn_momentum']}."),
        ("- Multi-task and multi-resolution runs train every layer with BN in training mode. `train_multitask` "
        "re-estimates statistics only for private S/B; for configs whose BN layers are shared (last private, all "
        "shared, independent) this benchmark re-estimates them over all tasks' training data afterwards. "
        "`[API: x]` is the accuracy before that step; neither is better everywhere, so verdicts give these "
        "baselines the better of the two, which favours them."),
        (f"- The near test split has {data[results['roles']['near']]['test_images']} images: one image is "
         f"{100 / data[results['roles']['near']]['test_images']:.2f} points. `±` is the sample standard deviation "
         "over seeds, with (min–max, n) beside it."),
    ]
    lines += [f"- Note: {note}" for note in plan.get("notes", [])]
    return "\n".join(lines)


def render_report(results: dict) -> str:
    verdicts = all_verdicts(results)
    sections = [
        f"# Reproducing *K for the price of 1* at {'GPU' if results['plan']['mode'] == 'gpu' else 'CPU'} scale "
        "(issues 8 and 19)",
        "Generated by `python -m benchmarks.reproduce` from `results.json`; rerun it rather than editing this file.",
        "## Setup", _setup(results),
        "## Verdicts",
        ("Rules: an ordering \"A beats B by ≥ t\" is *held* when the mean paired (same-seed) difference is ≥ t and A "
        "wins on every seed, *mixed* when only the mean reaches t, *not held* otherwise. \"A at most t below B\" is "
        "*held* when the mean and every seed's gap B − A are ≤ t. \"≥\" claims compare the mean paired difference with 0."),
        _verdict_table(verdicts),
        "### Where we disagree with the paper", _disagreements(verdicts),
        f"![accuracy vs trained parameters]({PLOT_NAME})",
    ]
    for number, (role, name) in enumerate(((r, n) for r, n in results["roles"].items() if n), start=1):
        regime = {"near": "near domain", "far": "far domain", "large": "more data"}[role]
        sections += [f"## 1.{number} Transfer [5.2, table 2, fig. 3]: {regime}, `{name}`",
                     _transfer_table(results, role, name)]
    sections += [
        "## 2. Learning rate [appendix B.2, fig. 9]", f"Paper: {paper.FIGURE9}.", _lr_table(results),
        "## 3. Random backbone [5.1, table 3]", _random_table(results),
        "## 4. BN statistics [appendix B.1, table 6]", _bn_table(results),
        "## 5. Multi-task [5.3, table 4]", _multitask_table(results),
        "## 6. Multi-resolution [5.4, table 5]", _multires_table(results),
        "## All runs", _runs_table(results),
    ]
    return "\n\n".join(sections) + "\n"


def write_report(results: dict, out_dir: str) -> tuple[str, str]:
    """Write OUT/REPORT.md and the plot; return their paths."""
    from benchmarks.reproduce.plot import plot

    os.makedirs(out_dir, exist_ok=True)
    report_path = os.path.join(out_dir, "REPORT.md")
    plot_path = plot(results, os.path.join(out_dir, PLOT_NAME))
    temp = report_path + ".tmp"
    with open(temp, "w") as handle:
        handle.write(render_report(results))
    os.replace(temp, report_path)
    return report_path, plot_path


