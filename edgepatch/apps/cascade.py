"""Resolution cascade (paper appendix C, after Streeter 2018), runtime-only.

Tasks trained per input resolution share one base. A cascade runs the
lowest resolution first and accepts its answer when the top probability
reaches that stage's threshold; otherwise it escalates to the next
resolution. The last stage always answers. ``fit_cascade`` picks the
stages (any ascending subset of the resolutions, down to the best single
one alone) and thresholds on validation data: the lowest mean cost whose
accuracy is at least the best single resolution's minus ``tolerance``.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass

import numpy as np

from edgepatch.errors import UsageError

MAX_CASCADE_FILE_BYTES = 1 << 20  # a cascade file is a few hundred bytes of JSON
GRID_LEVELS = 11  # candidate thresholds per stage (quantiles of that stage's confidences)


@dataclass(frozen=True)
class CascadeFit:
    resolutions: tuple[int, ...]
    thresholds: tuple[float | None, ...]  # one per stage but the last; None: always escalate
    accuracy: float
    mean_cost: float
    best_single_resolution: int
    best_single_accuracy: float
    best_single_cost: float

    @property
    def cost_reduction(self) -> float:
        """Mean-cost saving relative to always running the best single resolution."""
        return 1.0 - self.mean_cost / self.best_single_cost

    def to_json(self) -> dict:
        return {**asdict(self), "cost_reduction": self.cost_reduction}


def simulate(probabilities: list[np.ndarray], labels: np.ndarray, costs: list[float],
             thresholds) -> tuple[float, float]:
    """(accuracy, mean cost) of a cascade over stages with these thresholds."""
    answered = np.zeros(len(labels), bool)
    correct = np.zeros(len(labels), bool)
    cost = np.zeros(len(labels))
    for stage, (probs, stage_cost) in enumerate(zip(probabilities, costs)):
        active = ~answered
        cost[active] += stage_cost
        if stage < len(thresholds):
            threshold = np.inf if thresholds[stage] is None else thresholds[stage]
            accept = active & (probs.max(axis=1) >= threshold)
        else:
            accept = active
        correct[accept] = probs[accept].argmax(axis=1) == labels[accept]
        answered |= accept
    return float(correct.mean()), float(cost.mean())


def fit_cascade(probabilities: dict[int, np.ndarray], labels: np.ndarray, costs: dict[int, float],
                tolerance: float = 0.005) -> CascadeFit:
    """Choose per-stage thresholds: cheapest cascade within ``tolerance`` of the best single accuracy.

    Args:
        probabilities: resolution -> softmax outputs [N, K] on the same validation images.
        labels: [N] true classes.
        costs: resolution -> cost of one inference (e.g. median ms from ``edgepatch bench``).
        tolerance: accuracy the cascade may give up, as a fraction (0.005 = half a point).
    """
    resolutions = tuple(sorted(probabilities))
    if len(resolutions) < 2 or set(resolutions) != set(costs):
        raise UsageError(f"a cascade needs >= 2 resolutions with a cost each. Received {list(resolutions)}")
    if any(probabilities[r].shape != probabilities[resolutions[0]].shape for r in resolutions) \
            or probabilities[resolutions[0]].shape[0] != labels.shape[0]:
        raise UsageError("every resolution needs probabilities for the same validation images")
    singles = {r: float(np.mean(probabilities[r].argmax(axis=1) == labels)) for r in resolutions}
    best = max(resolutions, key=lambda r: (singles[r], -costs[r]))
    floor = singles[best] - tolerance
    chosen = ((best,), (), singles[best], float(costs[best]))  # the best single resolution alone
    # Any ascending subset of the resolutions can be a cascade; a stage left out is never run.
    for size in range(2, len(resolutions) + 1):
        for subset in itertools.combinations(resolutions, size):
            stages = [probabilities[r] for r in subset]
            stage_costs = [costs[r] for r in subset]
            grids = [np.unique(np.quantile(p.max(axis=1), np.linspace(0, 1, GRID_LEVELS))) for p in stages[:-1]]
            for thresholds in itertools.product(*[[float(t) for t in g] + [None] for g in grids]):
                accuracy, cost = simulate(stages, labels, stage_costs, thresholds)
                if accuracy >= floor and cost < chosen[3]:
                    chosen = (subset, thresholds, accuracy, cost)
    return CascadeFit(chosen[0], chosen[1], chosen[2], chosen[3], best, singles[best], float(costs[best]))


@dataclass(frozen=True)
class StageMeasurements:
    """Per-resolution softmax outputs on one set of labelled images, and measured per-image costs."""

    probabilities: dict[int, np.ndarray]
    labels: np.ndarray
    costs_ms: dict[int, float]
    deltas: dict[int, str]


def measure_stages(base, delta_paths, split, timing_runs: int = 25) -> StageMeasurements:
    """Run every per-resolution delta on ``split.test``; time one image per resolution (median ms).

    The resolutions are timed in interleaved rounds, so that load on the machine shifts all alike.

    Raises:
        UsageError: two deltas share a resolution, or a delta's classes are not the data's.
    """
    import statistics

    from edgepatch.runtime import read_task_delta
    from edgepatch.runtime.images import load_images
    from edgepatch.runtime.runner import softmax

    labels = np.array([label for _, label in split.test])
    probabilities, runners, deltas = {}, {}, {}
    for path in delta_paths:
        runner = base.apply(read_task_delta(path))
        resolution = runner.task.resolution
        if resolution in probabilities or tuple(runner.task.classes) != tuple(split.classes):
            raise UsageError(f"'{path}': each delta needs its own resolution and the data's classes {list(split.classes)}")
        images = load_images([p for p, _ in split.test], runner.task)
        probabilities[resolution] = np.concatenate([softmax(runner.predict(images[i:i + 32]))
                                                    for i in range(0, len(images), 32)])
        runner.time_one(images[:1])  # warm-up
        runners[resolution], deltas[resolution] = (runner, images[:1]), path
    times = {resolution: [] for resolution in runners}
    for _ in range(timing_runs):
        for resolution, (runner, image) in runners.items():
            times[resolution].append(runner.time_one(image))
    costs = {resolution: statistics.median(t) * 1e3 for resolution, t in times.items()}
    return StageMeasurements(probabilities, labels, costs, deltas)


def save_cascade(path: str, fit: CascadeFit, deltas: dict[int, str], base: str) -> None:
    from edgepatch.atomic import write_bytes_atomic

    record = {**fit.to_json(), "base": base, "deltas": {str(r): deltas[r] for r in fit.resolutions}}
    write_bytes_atomic(path, json.dumps(record, indent=2).encode())


class CascadeRunner:
    """Runs a fitted cascade: one base, one task runner per resolution, thresholds per stage."""

    def __init__(self, path: str, num_threads: int = 1):
        from edgepatch.atomic import read_small_file
        from edgepatch.errors import HeaderError
        from edgepatch.runtime import load_base, read_task_delta

        text = read_small_file(path, MAX_CASCADE_FILE_BYTES, "cascade file")
        try:
            record = json.loads(text)
            self.resolutions = [int(r) for r in record["resolutions"]]
            self.thresholds = [None if t is None else float(t) for t in record["thresholds"]]
            base_path, deltas = str(record["base"]), record["deltas"]
            delta_paths = [str(deltas[str(r)]) for r in self.resolutions]
        except (ValueError, KeyError, TypeError) as error:
            raise HeaderError(f"{path}: not a cascade file ({error!r})") from None
        if len(self.thresholds) != len(self.resolutions) - 1:
            raise HeaderError(f"{path}: {len(self.resolutions)} stages need {len(self.resolutions) - 1} thresholds")
        base = load_base(base_path, num_threads)
        self.runners = [base.apply(read_task_delta(delta)) for delta in delta_paths]

    def classify(self, paths: list[str]) -> list[dict]:
        """Top-1 label, probability and the resolution that answered, per image."""
        from edgepatch.runtime.images import load_images
        from edgepatch.runtime.runner import softmax

        results = []
        for path in paths:
            for stage, runner in enumerate(self.runners):
                probabilities = softmax(runner.predict(load_images([path], runner.task)))[0]
                threshold = self.thresholds[stage] if stage < len(self.thresholds) else None
                last = stage == len(self.runners) - 1
                if last or (threshold is not None and probabilities.max() >= threshold):
                    best = int(probabilities.argmax())
                    results.append({"image": path, "label": runner.task.classes[best],
                                    "probability": float(probabilities[best]), "resolution": self.resolutions[stage]})
                    break
        return results
