"""The baseline selectors: last-k and random."""

from __future__ import annotations

import numpy as np

from edgepatch.train.budget.selection import Selector, register_selector


class LastSelector(Selector):
    name = "last"
    help = "the layers nearest the output first (baseline)"

    def rank(self, units, context):
        return list(reversed(units))


class RandomSelector(Selector):
    name = "random"
    help = "a seeded random order (baseline)"

    def rank(self, units, context):
        seed = context.seed if context is not None else 0
        order = np.random.default_rng(seed).permutation(len(units))
        return [units[i] for i in order]


register_selector(LastSelector())
register_selector(RandomSelector())
