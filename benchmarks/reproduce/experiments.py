"""The schedule: which runs each experiment needs, in the order that makes partial results useful.

Experiment names (``EXPERIMENTS``) follow issue 8:

1. ``transfer``  - six variants on the near dataset and ``plan.far_variants`` on the far one,
   an LR sweep each;
2. ``lr``        - accuracy vs learning rate (the sweep of 1, no extra runs);
3. ``random``    - a random backbone;
4. ``bn``        - BN statistics: frozen, re-estimated, learned;
5. ``multitask`` - two tasks at once;
6. ``multires``  - one task at several resolutions;
plus ``large`` (more data) when a large dataset is given.

Learning rates are chosen per (dataset, variant) by ``tables.choose_lr`` on
the first seed's test accuracy; every later run uses that choice.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.reproduce.plan import Plan
from benchmarks.reproduce.runs import MultiSpec, TransferSpec
from benchmarks.reproduce.tables import choose_lr

EXPERIMENTS = ("transfer", "lr", "random", "bn", "multitask", "multires", "large")


@dataclass(frozen=True)
class Roles:
    """Dataset names by role; names index ``runs.Context.data_dirs``."""

    near: str
    far: str | None = None
    large: str | None = None


def _fallback_lr(variant: str) -> float:
    from benchmarks.reproduce.plan import VARIANTS
    from edgepatch.kinds import default_learning_rate

    return default_learning_rate(VARIANTS[variant][0])


class Schedule:
    """Runs ``plan`` through ``runner``; ``chosen`` maps (dataset, variant) to the LR picked."""

    def __init__(self, plan: Plan, roles: Roles, runner, experiments=EXPERIMENTS):
        unknown = sorted(set(experiments) - set(EXPERIMENTS))
        if unknown:
            raise ValueError(f"experiments must be among {list(EXPERIMENTS)}. Received {unknown}")
        self.plan, self.roles, self.run, self.experiments = plan, roles, runner, tuple(experiments)
        self.chosen: dict[tuple[str, str], float] = {}
        self.used: dict[tuple[str, str], tuple[float, str]] = {}

    def _spec(self, dataset, variant, lr, seed, **overrides) -> TransferSpec:
        fields = {"dataset": dataset, "variant": variant,
                  "resolution": self.plan.transfer_resolution(dataset, self.roles.far, self.roles.large),
                  "epochs": self.plan.epochs, "lr": lr, "seed": seed, "batch_size": self.plan.batch_size}
        fields.update(overrides)
        return TransferSpec(**fields)

    def lr_for(self, dataset: str, variant: str) -> float:
        """The dataset's own sweep choice, else the near dataset's, else the API's default."""
        if (dataset, variant) in self.chosen:
            source, lr = "sweep", self.chosen[(dataset, variant)]
        elif (self.roles.near, variant) in self.chosen:
            source, lr = f"{self.roles.near} sweep", self.chosen[(self.roles.near, variant)]
        else:
            source, lr = "API default", _fallback_lr(variant)
        self.used[(dataset, variant)] = (lr, source)
        return lr

    def chosen_lrs(self) -> list[dict]:
        """Every (dataset, variant) LR used after selection, and where it came from."""
        return [{"dataset": d, "variant": v, "lr": lr, "source": source}
                for (d, v), (lr, source) in sorted(self.used.items())]

    def sweep(self, dataset: str, variant: str, grid) -> float:
        """Run ``grid`` at the first seed; record and return the chosen LR."""
        seed = self.plan.seeds[0]
        records = [self.run(self._spec(dataset, variant, lr, seed)) for lr in grid]
        self.chosen[(dataset, variant)] = choose_lr(records)
        return self.lr_for(dataset, variant)

    def seeds(self, dataset: str, variant: str, seeds=None, **overrides) -> list[dict]:
        lr = self.lr_for(dataset, variant)
        seeds = self.plan.seeds if seeds is None else seeds
        return [self.run(self._spec(dataset, variant, lr, s, **overrides)) for s in seeds]

    # The experiments, in run order -------------------------------------------------------

    def transfer(self) -> None:
        plan, near = self.plan, self.roles.near
        for variant, grid in plan.lr_grid.items():
            self.sweep(near, variant, grid)
        for variant in plan.headline_variants:
            self.seeds(near, variant)
        if self.roles.far is None:
            return
        for variant in plan.far_variants:
            if variant in plan.far_lr_grid:
                self.sweep(self.roles.far, variant, plan.far_lr_grid[variant])
        for variant in plan.far_variants:
            self.seeds(self.roles.far, variant, None if variant in plan.headline_variants else plan.seeds[:1])

    def bn(self) -> None:
        """Paper table 6: last; last + re-estimated statistics; + learned S/B (and the API's three modes)."""
        for dataset in (self.roles.near, self.roles.far):
            if dataset is None:
                continue
            self.seeds(dataset, "last")
            lr = self.lr_for(dataset, "last")
            for seed in self.plan.seeds:
                self.run(self._spec(dataset, "last+stats", lr, seed))
            self.seeds(dataset, "sb+last")
            for mode in self.plan.bn_modes if dataset == self.roles.near else self.plan.far_bn_modes:
                self.seeds(dataset, "sb+last", self.plan.bn_modes_seeds, bn_stats=mode)

    def random(self) -> None:
        """Paper table 3 (right): a random backbone; S/B variants train on batch statistics."""
        plan = self.plan
        for variant, bn_stats in (("last", "frozen"), ("last+stats", "frozen"), ("sb+last", "reestimate"),
                                  ("sb", "reestimate")):
            for seed in plan.random_seeds:
                self.run(self._spec(self.roles.near, variant, plan.random_lr, seed, weights="random",
                                    bn_stats=bn_stats, resolution=plan.random_resolution,
                                    epochs=plan.random_epochs))

    def multitask_lr(self) -> float:
        """Multi-task training trains every layer: use full fine-tuning's chosen LR."""
        return self.lr_for(self.roles.near, "full")

    def multitask(self) -> None:
        plan = self.plan
        if self.roles.far is None:
            return
        tasks = ((self.roles.near, plan.multitask_resolution), (self.roles.far, plan.multitask_resolution))
        self._multi(tasks, ("sb+last private", "last private"), plan.multitask_epochs, plan.multitask_seeds,
                    plan.multitask_independent_seeds)

    def multires(self) -> None:
        plan = self.plan
        tasks = tuple((self.roles.near, res) for res in plan.multires_resolutions)
        self._multi(tasks, ("sb private", "all shared"), plan.multires_epochs, plan.multires_seeds,
                    plan.multires_independent_seeds)

    def _multi(self, tasks, configs, epochs, seeds, independent_seeds) -> None:
        for seed in sorted(set(seeds) | set(independent_seeds)):
            chosen = (configs if seed in seeds else ()) + (("independent",) if seed in independent_seeds else ())
            for config in chosen:
                self.run(MultiSpec(tasks, config, epochs, self.multitask_lr(), seed, self.plan.batch_size))

    def large(self) -> None:
        if self.roles.large is None:
            return
        for variant in ("last", "sb+last"):
            self.seeds(self.roles.large, variant, self.plan.large_seeds, epochs=self.plan.large_epochs)

    def run_all(self) -> None:
        if "lr" in self.experiments and "transfer" not in self.experiments:
            for variant in ("sb+last", "full"):
                self.sweep(self.roles.near, variant, self.plan.lr_grid[variant])
        order = (("transfer", self.transfer), ("bn", self.bn), ("multires", self.multires),
                 ("multitask", self.multitask), ("random", self.random), ("large", self.large))
        for name, step in order:
            if name in self.experiments:
                step()
