"""Patches under a parameter budget: which layers of the selectable kinds a task keeps private.

The paper fixes a patch by kind: every BN's scale and bias, every depthwise kernel. Under a
budget (after Kim et al., "Scalable Weight Reparametrization for Efficient Transfer Learning",
2023) a task keeps only some of those layers private; the others stay the base's, so they cost
nothing in the delta and nothing at run time. The head (``logits``) is always private and is not
counted. A budget is a parameter count (``20000``) or a share of the selectable kinds' full patch
(``25%``).

Selectors rank the candidate layers ("units"); the budget is then filled greedily in rank order,
skipping a unit that no longer fits. They share one interface (``Selector``) and one registry:

- ``score``: the head is first fitted on cached backbone features, then each unit is scored by
  the squared gradient of the training loss over one pass of the training data (an empirical
  Fisher information), per parameter;
- ``learned``: every unit trains for a warm-up with a group-lasso penalty (a proximal step that
  pulls each unit's change towards exactly zero), and units are ranked by how far they moved per
  parameter; the warm-up's changes are then undone and the chosen units train from the base;
- ``last``: the units nearest the output first (the last-k baseline);
- ``random``: a seeded random order (the random baseline).
"""


from edgepatch.train.budget import baselines  # noqa: F401,I001  (registers last, random)
from edgepatch.train.budget import data_driven  # noqa: F401  (registers score, learned)
from edgepatch.train.budget.selection import (
    SELECTORS,
    Budget,
    Selection,
    SelectionContext,
    Selector,
    Unit,
    budget_units,
    fill,
    get_selector,
    register_selector,
    select_layers,
)

__all__ = ["SELECTORS", "Budget", "Selection", "SelectionContext", "Selector", "Unit", "budget_units", "fill",
           "get_selector", "register_selector", "select_layers"]
