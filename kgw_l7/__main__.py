"""``python -m kgw_l7 worker --fd N ...``: one L7 worker process, started by ``kgw_l7.plane``.

The process main is ``kgw_l7.worker.main``; this module only lets the package run as
``python -m kgw_l7`` (no fork of the supervisor, which may run threads).
"""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] != ["worker"]:
        print("usage: python -m kgw_l7 worker --fd FD --index N --options B64", file=sys.stderr)
        sys.exit(2)
    from kgw_l7.worker import main

    sys.exit(main(sys.argv[2:]))
