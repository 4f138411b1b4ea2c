"""Replays the Gateway API conformance suite (as data, see ../shared/conformance) against kgw.

The upstream suite is Go code that needs a cluster. Here one ``kgw run`` serves a work
directory that plays the API server, ``kgw echo`` processes play the echo pods, and the
status checks and request cases recorded from upstream are replayed with upstream's
semantics. ``python -m conformance --help`` for the options.
"""
