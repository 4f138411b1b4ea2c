"""The command-line layer kgw's two CLIs share: ``kgw`` (``controller.cli``) and
``kgw-inspect`` (``kgw_l4.inspect``).

* ``env`` -- ``ExitStatus``, the one set of exit codes, and ``Environment``, the streams a
  command writes to (tests swap it).
* ``output`` -- tables for people; JSON and YAML, stable and uncoloured, for scripts.
* ``commands`` -- a command tree declared as data, built into argparse and parsed without
  exiting the process.
* ``admin`` -- where a running gateway's admin API listens, and reading it.
* ``eventloop`` -- the event loop a long-running command runs on.

A package of its own, below everything else: the data planes never import ``controller``,
and the controller's CLI has no business reaching into the L4 plane for its output. It
imports neither, nor ``kgw_l7``: only the standard library, PyYAML and uvloop.
"""
