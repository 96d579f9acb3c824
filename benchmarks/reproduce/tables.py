"""Aggregation of run records and the verdict on each claim. Pure functions over the results dict.

Accuracies are fractions in the records and points (x100) in summaries.
Verdict rules (stated in the report too):

- an ordering "A beats B by >= t points" is **held** when the mean paired
  difference (same seed) is >= t and A beats B on every seed; **mixed**
  when the mean reaches t but some seed does not have A > B; **not held**
  when the mean misses t;
- "A at most t points below B" is **held** when the mean gap B - A is <= t
  and every seed's gap is <= t; **mixed** when only the mean is; **not held**
  otherwise;
- a claim with no runs is **not run**.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

HELD, MIXED, NOT_HELD, NOT_RUN = "held", "mixed", "not held", "not run"


def choose_lr(records: list[dict]) -> float:
    """The LR of the best test accuracy (ties: better train accuracy, then the smaller LR)."""
    best = max(records, key=lambda r: (round(r["test_accuracy"], 6), round(r["train_accuracy"], 6), -r["lr"]))
    return best["lr"]


def transfer_runs(results: dict, **match) -> list[dict]:
    """Transfer records whose fields equal ``match``, sorted by seed then LR."""
    found = [r for r in results["runs"] if r["kind"] == "transfer" and all(r.get(k) == v for k, v in match.items())]
    return sorted(found, key=lambda r: (r["seed"], r["lr"]))


def multi_runs(results: dict, **match) -> list[dict]:
    found = [r for r in results["runs"] if r["kind"] == "multi" and all(r.get(k) == v for k, v in match.items())]
    return sorted(found, key=lambda r: r["seed"])


def multires_runs(results: dict, config: str) -> list[dict]:
    """The multi-resolution experiment's runs of ``config``: its epochs and exactly the plan's resolutions."""
    plan = results["plan"]
    return [r for r in multi_runs(results, config=config, epochs=plan["multires_epochs"])
            if [t["resolution"] for t in r["tasks"]] == list(plan["multires_resolutions"])]


def chosen_lr(results: dict, dataset: str, variant: str) -> float | None:
    for entry in results.get("chosen_lrs", []):
        if entry["dataset"] == dataset and entry["variant"] == variant:
            return entry["lr"]
    return None


def transfer_resolution(results: dict, dataset: str) -> int:
    """The plan's transfer resolution for ``dataset`` (the far and large datasets have their own)."""
    plan, roles = results["plan"], results["roles"]
    if dataset == roles.get("large"):
        return plan["large_resolution"]
    return plan["far_resolution"] if dataset == roles["far"] else plan["resolution"]


def headline(results: dict, dataset: str, variant: str, **overrides) -> list[dict]:
    """Runs of ``variant`` on ``dataset`` at its chosen LR and the plan's resolution and epochs."""
    plan = results["plan"]
    match = {"dataset": dataset, "variant": variant, "weights": "imagenet", "bn_stats": "frozen",
             "resolution": transfer_resolution(results, dataset), "epochs": plan["epochs"]}
    match.update(overrides)
    if "lr" not in match:  # the dataset's own choice, else the near dataset's (as the schedule does)
        lr = chosen_lr(results, dataset, variant) or chosen_lr(results, results["roles"]["near"], variant)
        if lr is None:
            return []
        match["lr"] = lr
    return transfer_runs(results, **match)


@dataclass(frozen=True)
class Summary:
    mean: float  # points
    std: float  # sample standard deviation over seeds (0 for one seed)
    low: float
    high: float
    n: int
    seeds: tuple[int, ...]

    def text(self) -> str:
        if self.n == 1:
            return f"{self.mean:.1f} (1 seed)"
        return f"{self.mean:.1f} ± {self.std:.1f} ({self.low:.1f}–{self.high:.1f}, n={self.n})"


def summarize(values: list[float], seeds) -> Summary | None:
    if not values:
        return None
    points = [100 * v for v in values]
    std = statistics.stdev(points) if len(points) > 1 else 0.0
    return Summary(statistics.fmean(points), std, min(points), max(points), len(points), tuple(seeds))


def summarize_runs(runs: list[dict]) -> Summary | None:
    return summarize([r["test_accuracy"] for r in runs], [r["seed"] for r in runs])


def paired(a_runs: list[dict], b_runs: list[dict]) -> dict[int, float]:
    """Seed -> (a - b) in points, over the seeds both have."""
    a = {r["seed"]: r["test_accuracy"] for r in a_runs}
    b = {r["seed"]: r["test_accuracy"] for r in b_runs}
    return {seed: 100 * (a[seed] - b[seed]) for seed in sorted(set(a) & set(b))}


@dataclass(frozen=True)
class Verdict:
    claim: str
    regime: str
    paper: str
    ours: str
    verdict: str
    seeds: tuple[int, ...]

    def to_json(self) -> dict:
        return asdict(self)


def beats_by(differences: dict[int, float], threshold: float) -> str:
    if not differences:
        return NOT_RUN
    mean = statistics.fmean(differences.values())
    if mean < threshold:
        return NOT_HELD
    return HELD if all(d > 0 for d in differences.values()) else MIXED


def within(gaps: dict[int, float], threshold: float) -> str:
    if not gaps:
        return NOT_RUN
    if statistics.fmean(gaps.values()) > threshold:
        return NOT_HELD
    return HELD if all(g <= threshold for g in gaps.values()) else MIXED


def differences_text(differences: dict[int, float]) -> str:
    if not differences:
        return "no runs"
    per_seed = ", ".join(f"s{seed} {d:+.1f}" for seed, d in differences.items())
    return f"mean {statistics.fmean(differences.values()):+.1f} points ({per_seed})"
