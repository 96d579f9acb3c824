"""The budget, the unit a budget counts, the selector interface and registry, greedy filling."""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgepatch.errors import UsageError
from edgepatch.kinds import get_kind, selectable_layers


@dataclass(frozen=True)
class Unit:
    """One layer a budget may keep private: its name (a selection names it), kind and trained parameters."""

    name: str
    kind: str
    parameters: int
    layer: object


@dataclass(frozen=True)
class Budget:
    """A parameter budget: ``amount`` parameters, or ``amount`` percent of the full patch when ``percent``."""

    amount: float
    percent: bool

    @staticmethod
    def parse(text) -> "Budget":
        text = str(text).strip()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(%?)", text)
        if not match:
            raise UsageError(f"a budget is a parameter count (20000) or a percentage (25%). Received '{text}'")
        amount, percent = float(match.group(1)), bool(match.group(2))
        if amount <= 0 or (percent and amount > 100) or (not percent and amount != int(amount)):
            raise UsageError(f"a budget is an integer count > 0 or a percentage in (0, 100]. Received '{text}'")
        return Budget(amount, percent)

    def parameters(self, total: int) -> int:
        """The budget in parameters, for a full patch of ``total``."""
        return int(total * self.amount / 100) if self.percent else int(self.amount)

    def __str__(self) -> str:
        return f"{self.amount:g}%" if self.percent else str(int(self.amount))


@dataclass
class SelectionContext:
    """What a data-driven selector may use: the task model (prepared with every unit trainable)
    and its training data.

    ``train_data``: shuffled (images, labels) batches; ``features_data``: the same items unshuffled
    (cached features need a stable order); ``learning_rate``, ``seed``, ``batch_size``: the run's.
    """

    model: object
    train_data: object
    features_data: object
    learning_rate: float
    batch_size: int
    seed: int = 0
    score_batches: int | None = None  # None: one pass over train_data (16 batches scored eurosat 0.6 points lower)
    warmup_epochs: int = 1
    verbose: int = 0


class Selector:
    """Ranks units; the budget is filled in that order (``fill``). Register with ``register_selector``."""

    name: str = ""
    help: str = ""

    def rank(self, units: list[Unit], context: SelectionContext | None) -> list[Unit]:
        raise NotImplementedError


SELECTORS: dict[str, Selector] = {}


def register_selector(selector: Selector) -> Selector:
    if selector.name in SELECTORS:
        raise ValueError(f"selector '{selector.name}' is already registered")
    SELECTORS[selector.name] = selector
    return selector


def get_selector(name: str) -> Selector:
    if name not in SELECTORS:
        raise UsageError(f"selector must be one of {sorted(SELECTORS)}. Received '{name}'")
    return SELECTORS[name]


def budget_units(model, kinds) -> list[Unit]:
    """The units of ``kinds`` in ``model`` (model order) that a budget chooses among."""
    units = []
    for kind_name, layer in selectable_layers(model, kinds):
        count = get_kind(kind_name).layer_parameters(layer)
        if count:
            units.append(Unit(layer.name, kind_name, count, layer))
    return units


def fill(ranked: list[Unit], limit: int) -> tuple[str, ...]:
    """Take units in rank order while they fit in ``limit`` parameters; return their names."""
    chosen, used = [], 0
    for unit in ranked:
        if used + unit.parameters <= limit:
            chosen.append(unit.name)
            used += unit.parameters
    return tuple(chosen)


@dataclass(frozen=True)
class Selection:
    """A budget's outcome: the private layers, their parameters, the full patch's, and the rank order used."""

    layers: tuple[str, ...]
    parameters: int
    full_parameters: int
    limit: int
    selector: str

    def record(self) -> dict:
        return {"selector": self.selector, "budget_parameters": self.limit, "selected_parameters": self.parameters,
                "full_parameters": self.full_parameters, "selected_layers": len(self.layers)}


def select_layers(units: list[Unit], budget: Budget, selector: str, context: SelectionContext | None) -> Selection:
    """Choose the private layers of ``units`` under ``budget`` with the named selector."""
    total = sum(unit.parameters for unit in units)
    if not units:
        raise UsageError("a budget needs a selectable kind (scale_bias or depthwise) with layers in the model")
    limit = budget.parameters(total)
    smallest = min(unit.parameters for unit in units)
    if limit < smallest:
        raise UsageError(f"budget {budget} is {limit} parameters; the smallest layer a task can keep private "
                         f"has {smallest}")
    chosen = fill(get_selector(selector).rank(list(units), context), limit)
    size = {unit.name: unit.parameters for unit in units}
    return Selection(chosen, sum(size[name] for name in chosen), total, limit, selector)
