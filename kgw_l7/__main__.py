"""``python -m kgw_l7 worker --fd N ...``: one L7 worker process, started by ``kgw_l7.plane``.

A module of its own because ``kgw_l7.worker`` may be a compiled extension
(``scripts/build_ext.py``), and ``python -m`` can only run a module that has Python code.
"""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] != ["worker"]:
        print("usage: python -m kgw_l7 worker --fd FD --index N --options B64", file=sys.stderr)
        sys.exit(2)
    from kgw_l7.worker import main

    sys.exit(main(sys.argv[2:]))
