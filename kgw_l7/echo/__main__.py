"""``python -m kgw_l7.echo``: the echo backend (``kgw echo`` runs the same main)."""

import sys

from kgw_l7.echo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
