"""Run a module under cProfile counting the process's CPU time, not wall time:
``python -m bench.l4.cpuprofile OUT -m MODULE ARGS...``. On a shared machine the
wall-clock profile charges whatever ran while the process was preempted to the
function it was in; CPU time does not.
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    out, flag, module, *args = sys.argv[1:]
    if flag != "-m":
        raise SystemExit("usage: python -m bench.l4.cpuprofile OUT -m MODULE [ARGS...]")
    sys.argv = [module, *args]
    prof = cProfile.Profile(time.process_time)
    try:
        prof.runcall(runpy.run_module, module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        prof.dump_stats(out)


if __name__ == "__main__":
    main()
