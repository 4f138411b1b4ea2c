"""One status writer per cluster: leader election with a ``coordination.k8s.io/v1`` Lease.

Every agent serves traffic from its own watch; only the holder of the Lease writes
status. The algorithm is client-go's ``leaderelection``: the holder renews
``spec.renewTime`` every ``retry_period``; a candidate takes the Lease over once it has
seen the same record unchanged for ``leaseDurationSeconds`` (measured on its own
monotonic clock, so clock skew between nodes does not matter); a holder that cannot
renew within ``renew_deadline`` stops writing before anyone else may start; a holder
shutting down releases the Lease (empty holder) so a successor need not wait. Updates
carry the Lease's resourceVersion, so two candidates racing for it cannot both win.

The client's own ``kubernetes.leaderelection`` is not used: it cannot be stopped or
released, leaves ``leaseTransitions`` alone, exits the process on a bad setting and
works only with the global client configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from collections.abc import Awaitable, Callable

from kubernetes import client

from controller.kube.client import describe, status_code

log = logging.getLogger("kgw.kube.leader")

Callback = Callable[[], Awaitable[None]]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaderElector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str, *,
                 lease_duration: int = 15, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 on_started: Callback | None = None, on_stopped: Callback | None = None) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.coordination = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline = lease_duration, renew_deadline
        self.retry_period = retry_period
        self.on_started, self.on_stopped = on_started, on_stopped
        # A Lease call never outlasts the renew deadline: a holder stuck on a slow API
        # server steps down (renew_deadline after its last renewal, plus one period)
        # before a candidate may take over (lease_duration after it last saw a change).
        self._timeout = (min(5.0, renew_deadline), renew_deadline)
        self.is_leader = False
        self.holder = ""
        self._observed: tuple[object, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._stop = asyncio.Event()
        #: The acquire/renew round trip in flight (``run``), awaited by ``stop``.
        self._attempt: asyncio.Future[bool] | None = None

    async def run(self) -> None:
        """Acquire, renew, and re-acquire after a loss, until ``stop``."""
        while not self._stop.is_set():
            self._attempt = asyncio.ensure_future(asyncio.to_thread(self._try_acquire_or_renew))
            try:
                held = await self._attempt
            except Exception as exc:  # the API server is unreachable: keep trying
                log.warning("lease %s/%s: %s", self.namespace, self.name, describe(exc))
                held = False
            if self._stop.is_set():
                break  # (``stop`` decides what the last attempt means)
            now = time.monotonic()
            if held:
                self._renewed_at = now
                if not self.is_leader:
                    await self._become(True)
            elif self.is_leader and (self.holder != self.identity
                                     or now - self._renewed_at > self.renew_deadline):
                await self._become(False)
            period = (self.retry_period if self.is_leader
                      else self.retry_period * random.uniform(1.0, 1.2))
            try:
                await asyncio.wait_for(self._stop.wait(), period)
            except TimeoutError:
                pass

    async def stop(self, release: bool = True) -> None:
        """Stop taking part; if leading and ``release``, hand the Lease back at once."""
        self._stop.set()
        holds = False  # (the API's Lease names us, though we never led on it)
        attempt = self._attempt
        if attempt is not None and not attempt.done():
            # A renewal in flight would write the Lease after the release below (and a
            # new holder would wait out the lease): let it land first. Bounded by the
            # request timeout.
            with contextlib.suppress(Exception):
                holds = bool(await asyncio.shield(attempt))
        if self.is_leader:
            holds = True
            await self._become(False)
        if holds and release:
            try:
                await asyncio.to_thread(self._release)
            except Exception as exc:
                log.warning("releasing lease %s/%s: %s", self.namespace, self.name,
                            describe(exc))

    async def _become(self, leader: bool) -> None:
        self.is_leader = leader
        log.info("%s %s the status writer (lease %s/%s)", self.identity,
                 "is now" if leader else "is no longer", self.namespace, self.name)
        callback = self.on_started if leader else self.on_stopped
        if callback is not None:
            try:
                await callback()
            except Exception:
                log.exception("leadership callback failed")

    # -- one round trip (in a thread: the client is synchronous) ------------------------------

    def _try_acquire_or_renew(self) -> bool:
        now = _now()
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace,
                                                           _request_timeout=self._timeout)
        except Exception as exc:
            if status_code(exc) != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=client.V1LeaseSpec(holder_identity=self.identity,
                                        lease_duration_seconds=self.lease_duration,
                                        acquire_time=now, renew_time=now, lease_transitions=0))
            try:
                self.coordination.create_namespaced_lease(self.namespace, body,
                                                          _request_timeout=self._timeout)
            except Exception as create_exc:
                if status_code(create_exc) == 409:  # someone else created it first
                    return False
                raise
            self.holder = self.identity
            return True

        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity or ""
        record = (holder, spec.renew_time, spec.acquire_time, spec.lease_duration_seconds,
                  spec.lease_transitions)
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        self.holder = holder
        duration = spec.lease_duration_seconds or self.lease_duration
        if holder and holder != self.identity and time.monotonic() < self._observed_at + duration:
            return False  # held by someone else, not expired
        if holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + (1 if holder else 0)
            spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = self.lease_duration
        lease.spec = spec
        try:
            self.coordination.replace_namespaced_lease(self.name, self.namespace, lease,
                                                       _request_timeout=self._timeout)
        except Exception as exc:
            if status_code(exc) == 409:  # changed under us: look again next round
                return False
            raise
        self.holder = self.identity
        return True

    def _release(self) -> None:
        lease = self.coordination.read_namespaced_lease(self.name, self.namespace,
                                                        _request_timeout=self._timeout)
        if lease.spec is None or lease.spec.holder_identity != self.identity:
            return
        lease.spec.holder_identity = None
        lease.spec.lease_duration_seconds = 1
        lease.spec.renew_time = _now()
        self.coordination.replace_namespaced_lease(self.name, self.namespace, lease,
                                                   _request_timeout=self._timeout)
