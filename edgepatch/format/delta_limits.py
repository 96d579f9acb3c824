"""Value rules of a float delta that no shape check catches (spec: *Float delta*, step 11 e and f).

A delta can be a well-formed file and still lie about its task: a head that is not as
wide as the class list (a ghost label, or labels shifted onto other outputs), or a site
scale that erases a channel (0, a denormal) or is larger than any trained task has.
"""

from __future__ import annotations

import numpy as np

from edgepatch.errors import NonFiniteError, ShapeMismatchError
from edgepatch.format.names import DENSE_OP, SCALE

MIN_ABS_SITE_SCALE = 1e-12  # a BN multiplier ratio: 12 decades below the base's is no trained task
MAX_ABS_SITE_SCALE = 1e12  # and keeps base kernel x scale a normal float32 for |kernel| >= 1e-20


def check_head(classes, sites, source: str) -> None:
    """Step 11 e: a dense site is the task's head, with one output per class (ShapeMismatchError)."""
    for site in sites:
        if site.op == DENSE_OP and site.channels != len(classes):
            raise ShapeMismatchError(f"{source}: site {site.name!r} is the task's head with {site.channels} outputs, "
                                     f"but meta.task.classes names {len(classes)} classes")


def check_site_scales(sites, scale: np.ndarray | None, source: str) -> None:
    """Step 11 f: every value of the packed ``scale`` tensor (as float32) has a bounded magnitude (NonFiniteError)."""
    if scale is None:
        return
    magnitude = np.abs(np.asarray(scale, np.float32)).astype(np.float64)
    bad = (magnitude < MIN_ABS_SITE_SCALE) | (magnitude > MAX_ABS_SITE_SCALE)
    if not bad.any():
        return
    position = int(np.argmax(bad))
    for site in (site for site in sites if site.holds(SCALE)):
        if position < site.channels:
            raise NonFiniteError(f"{source}: tensor 'scale': site {site.name!r} channel {position} has a scale "
                                 "outside 1e-12 <= |scale| <= 1e12 (zero, denormal or huge)")
        position -= site.channels
    raise AssertionError("the packed scale is longer than its sites")
