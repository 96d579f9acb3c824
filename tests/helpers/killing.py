"""Kill a writer mid-way (SIGKILL) at a chosen call, to test that outputs are atomic.

``run_until_killed(code, hook, nth)`` runs ``code`` in a fresh Python
subprocess in which the function ``hook`` (a dotted name such as
``"os.rename"`` or ``"edgepatch.ship.fetch.write_bytes_atomic"``) pauses on its
``nth`` call, *before* doing anything; the parent then SIGKILLs the child.

Example (convert, whose output swap renames twice)::

    code = "from converters.convert import convert; convert('m.keras', ['t.patch'], 'out')"
    for nth in (1, 2):
        assert run_until_killed(code, "os.rename", nth)
        # 'out' now holds the old complete output or nothing
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

from conftest import REPO

PAUSED = "KILL-POINT-REACHED"

_PRELUDE = """
import importlib, sys, time
_module_name, _attr = {hook!r}.rsplit(".", 1)
_module = importlib.import_module(_module_name)
_real = getattr(_module, _attr)
_calls = [0]
def _paused(*args, **kwargs):
    _calls[0] += 1
    if _calls[0] == {nth}:
        sys.stdout.write({paused!r} + "\\n")
        sys.stdout.flush()
        time.sleep(3600)
    return _real(*args, **kwargs)
setattr(_module, _attr, _paused)
"""


def run_until_killed(code: str, hook: str, nth: int, timeout: float = 120.0) -> bool:
    """Run ``code``; SIGKILL it when the ``nth`` call of ``hook`` starts.

    Returns True if the child was killed at that call, False if it exited
    first (the call never came). Raises AssertionError if it hangs or fails.
    """
    script = _PRELUDE.format(hook=hook, nth=nth, paused=PAUSED) + code
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([child.stdout], [], [], timeout)
        assert ready, f"no output from the child within {timeout} s"
        line = child.stdout.readline().strip()
        if line == PAUSED:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout)
            return True
        child.wait(timeout)
        assert child.returncode == 0, f"child failed ({child.returncode}): {child.stderr.read()[-2000:]}"
        return False
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
