"""What each signal means to ``kgw run`` and ``kgw agent`` (README: Signals).

* SIGTERM: stop: /readyz turns not ready, the listeners keep accepting for --drain-delay,
  then close, and the requests in flight get --drain-timeout (Supervisor.drain).
* SIGINT: the same without the delay (Ctrl-C: nobody's load balancer is waiting).
* SIGHUP: re-read the configuration now, every file (as nginx and haproxy users expect);
  nothing stops, no connection is touched. The agent's source is a watch of the API
  server: there is nothing to re-read, and it says so.
* SIGUSR1, SIGUSR2: no meaning; logged and ignored (their default action would kill the
  process, and the workers with it).
* SIGPIPE: ignored (Python's own setting: a write to a closed socket is an error on that
  socket, not the end of the process).

The L7 workers ignore all of these themselves (kgw_l7.worker): a signal sent to the whole
process group reaches them too.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

log = logging.getLogger("kgw")

IGNORED = (signal.SIGUSR1, signal.SIGUSR2)

#: SIGTERM: seconds /readyz says not ready while the listeners still accept (--drain-delay),
#: long enough for load balancers to take the gateway out of their pools.
DRAIN_DELAY = 5.0
#: Then seconds the requests in flight get to finish (--drain-timeout). The DaemonSet's
#: terminationGracePeriodSeconds (30) covers both.
DRAIN_TIMEOUT = 20.0


def install(loop: asyncio.AbstractEventLoop, stop: Callable[[int], None],
            reread: Callable[[], bool]) -> None:
    """``stop(signum)`` starts stopping; ``reread()`` re-reads the configuration, False when
    the source has nothing to re-read."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)

    def on_hup() -> None:
        if reread():
            log.info("SIGHUP: re-reading the configuration")
        else:
            log.info("SIGHUP: nothing to re-read (the source is watched continuously)")

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    for sig in IGNORED:
        loop.add_signal_handler(sig, log.warning, "%s received: it has no meaning for kgw; ignored",
                                signal.Signals(sig).name)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
