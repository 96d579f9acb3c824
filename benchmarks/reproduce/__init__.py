"""Reproduce the paper's claims at CPU scale on real photos (issue 8).

Run from the repository root::

    .venv/bin/python -m benchmarks.reproduce --quick \\
        --weights ../shared/weights/mobilenet_v2_1.0_224_no_top.h5 --data ../shared/data/flowers5

``--quick`` (under 10 minutes on 2 cores) previews four of the six
experiments with one seed, fewer learning rates, epochs and pixels; the
default full mode (about 55 minutes on 2 cores) runs all six plus the "more
data" rows on ``../shared/data/eurosat_large`` (``--data-large`` picks another
set), and its verdicts are the ones the report states as results. Measured
figures are in each report's Setup.

Every number comes from the project's own training API
(``edgepatch.train.models.build_classifier``, ``edgepatch.train.transfer.train``,
``edgepatch.train.multitask.train_multitask``); this package only schedules runs,
caches decoded images between them, and writes:

- ``OUT/results.json``: the plan, the environment and one record per run
  (schema ``SCHEMA``); it is rewritten after every run, and a rerun with the
  same ``--out`` skips runs already recorded there;
- ``OUT/REPORT.md``: the tables, the paper's numbers beside ours and one
  verdict per claim;
- ``OUT/accuracy_vs_parameters.png``: test accuracy vs trained parameters,
  and accuracy vs learning rate.

Modules: ``plan`` (what each mode runs), ``datasets`` (decode cache), ``runs`` (one run through the API),
``experiments`` (the schedule), ``tables`` (aggregation and verdicts),
``paper`` (quoted figures), ``report`` (Markdown and plot).
"""

SCHEMA = "edgepatch-reproduce/1"
