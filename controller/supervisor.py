"""The supervisor: source -> store -> translate -> publish, plus the admin API.

One loop, shared by standalone mode (file source) and cluster mode (Kubernetes
source): each batch of object events is applied to the store, translated
incrementally, and pushed to both data planes; the new status goes to the status
book (and, in a cluster, to a writer). The data planes are passed in, so the loop can
run with whichever planes a deployment has.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controller import certexpiry, confloop, planestatus
from controller.admin import AdminServer, Response, json_response, text_response
from controller.gwaddress import NodeView
from controller.redact import redact
from controller.source import Batch, Problem, Source
from controller.status import StatusBook
from controller.store import Store
from controller.translate import Options, Translation, Translator
from kgw_l4.config import L4Config
from kgw_l7.config import L7Config

log = logging.getLogger("kgw")


class L7PlaneLike(Protocol):
    async def apply(self, config: L7Config) -> None: ...
    async def metrics(self) -> bytes: ...
    def listener_errors(self) -> dict[str, str]: ...
    async def health(self) -> list[str]: ...
    async def drain(self) -> None: ...


class L4PlaneLike(Protocol):
    mode: str

    async def apply(self, config: L4Config) -> None: ...
    def errors(self) -> dict[str, str]: ...
    def config_dump(self) -> dict[str, Any]: ...


class StatusWriter(Protocol):
    """Where status goes besides the admin API (the Kubernetes API in a cluster)."""

    async def write(self, book: StatusBook, changed: set[Any], store: Store) -> None: ...


@dataclass
class _Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.generation = Gauge("kgw_config_generation",
                                "Generation of the configuration last published", registry=r)
        self.objects = Gauge("kgw_source_objects", "Objects in the store", registry=r)
        self.problems = Gauge("kgw_source_problems", "Objects or files the source refused",
                              registry=r)
        self.translate = Histogram("kgw_translate_seconds", "Time to translate a batch of changes",
                                   registry=r,
                                   buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5,
                                            5, 10))
        self.publish = Histogram(
            "kgw_config_publish_seconds",
            "Time from the source noticing a change to the configuration being live in every data "
            "plane",
            registry=r, buckets=(.005, .01, .025, .05, .1, .2, .5, 1, 2.5, 5, 10))
        self.errors = Counter("kgw_config_apply_errors_total", "Data plane apply failures",
                              ["plane"], registry=r)


class Supervisor:
    def __init__(self, source: Source, *, options: Options = Options(),
                 l7: L7PlaneLike | None = None, l4: L4PlaneLike | None = None,
                 status_writer: StatusWriter | None = None, node: NodeView | None = None) -> None:
        self.source = source
        #: refreshes Options.local_addresses and resolved_hostnames before each
        #: translation (controller/gwaddress.py); None keeps the options as given
        self.node = node
        self.store = Store()
        self.translator = Translator(options)
        self.status = StatusBook()
        self.l7 = l7
        self.l4 = l4
        self.status_writer = status_writer
        self.translation: Translation | None = None
        self.problems: tuple[Problem, ...] = ()
        self.generation = 0
        self.ready = asyncio.Event()
        self.not_ready_reason = "waiting for the first configuration"
        #: Shutting down: /readyz says not ready whatever else holds (see drain()).
        self.shutting_down = False
        self.metrics = _Metrics()
        self._published = asyncio.Condition()
        self._source_problems: tuple[Problem, ...] = ()
        #: The last batch (or the source) failed: what went wrong, while the last good
        #: configuration keeps serving (confloop).
        self.loop_error: Problem | None = None
        self._refreshes: set[asyncio.Task] = set()
        self._status_lock = asyncio.Lock()
        #: status is published again when the next served certificate expires or becomes
        #: valid (certexpiry); the warnings already logged, so each is logged once
        self._cert_timer: asyncio.TimerHandle | None = None
        self._cert_warned: set[str] = set()
        if l4 is not None and hasattr(l4, "on_errors_changed"):
            # the kernel plane finds problems between configurations (maps changed
            # behind its back, a backend that lost its route): status follows
            l4.on_errors_changed = self._plane_errors_changed
        if l7 is not None and hasattr(l7, "on_problems_changed"):
            # what serving finds broken (a Redis, a JWKS URL): the policies' status follows
            l7.on_problems_changed = self._plane_errors_changed

    # -- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        await confloop.run(self)

    async def apply(self, batch: Batch) -> None:
        changed = self.store.apply(batch.events)
        self._source_problems = batch.problems
        confloop.publish_problems(self)
        self.metrics.objects.set(len(self.store))
        node_changed = False
        if self.node is not None:  # every batch (a SIGHUP rescan too) looks at the node again
            options = await self.node.refresh(self.store, self.translator.options)
            node_changed = options != self.translator.options
            self.translator.options = options
        if (not (changed or node_changed) and self.translation is not None
                and self.loop_error is None):
            return

        started = time.perf_counter()
        previous = self.translation
        # In a thread: a large change (a maximum-size file) takes seconds to translate, and
        # the admin API must answer meanwhile. Nothing else touches the translator, and the
        # store changes only between batches.
        self.translation = t = await asyncio.to_thread(self.translator.update, self.store, changed)
        self.metrics.translate.observe(time.perf_counter() - started)

        confloop.publish_problems(self)
        self.generation += 1
        ok = True
        if self.l7 is not None and (previous is None or t.l7 != previous.l7):
            ok &= await self._apply_plane("l7",
                                          self.l7.apply(_with_generation(t.l7, self.generation)))
        if self.l4 is not None and (previous is None or t.l4 != previous.l4):
            ok &= await self._apply_plane("l4",
                                          self.l4.apply(_with_generation(t.l4, self.generation)))
        self.metrics.publish.observe(max(0.0, time.monotonic() - batch.noticed_at))
        self.metrics.generation.set(self.generation)

        await self._publish_status(t)
        if ok:
            self.ready.set()
            self.not_ready_reason = ""
        async with self._published:
            self._published.notify_all()

    async def _publish_status(self, t: Translation) -> None:
        """Translation's status with the data planes' failures folded in, to the book
        and the writer. One at a time, always from the newest translation: the book is
        updated in a thread (a large update takes a while), and a refresh for plane
        errors must not overwrite a newer configuration's statuses with older ones."""
        async with self._status_lock:
            t = self.translation or t
            statuses = planestatus.overlay(
                t.statuses, self.store.get_key, t.l7, t.l4,
                self.l7.listener_errors() if self.l7 is not None else {},
                self.l4.errors() if self.l4 is not None else {},
                self._l7_problems())
            statuses = self._certificate_warnings(statuses, t)
            # (copy-on-write)
            status_changed = await asyncio.to_thread(self.status.update, statuses)
            if self.status_writer is not None and status_changed:
                try:
                    await self.status_writer.write(self.status, status_changed, self.store)
                except Exception:  # a writer failure must not stop serving
                    log.exception("status write failed")

    def _l7_problems(self) -> dict[Any, str]:
        get = getattr(self.l7, "runtime_problems", None)
        return get() if get is not None else {}

    def _certificate_warnings(self, statuses: dict, t: Translation) -> dict:
        """Expired and not-yet-valid certificates in their listeners' status (certexpiry),
        each logged once; and a status refresh when the next one changes."""
        now = time.time()
        found = certexpiry.warnings(t.certificates, now)
        for (owner, listener), msgs in sorted(found.items(),
                                              key=lambda kv: (str(kv[0][0]), kv[0][1])):
            for msg in msgs:
                key = f"{owner}/{listener}: {msg}"
                if key not in self._cert_warned:
                    self._cert_warned.add(key)
                    log.warning("listener %s of %s: %s", listener, owner,
                                msg.removeprefix("warning: "))
        self._cert_warned &= {f"{o}/{lis}: {m}" for (o, lis), ms in found.items() for m in ms}
        if self._cert_timer is not None:
            self._cert_timer.cancel()
            self._cert_timer = None
        nxt = certexpiry.next_change(t.certificates, now)
        if nxt is not None:
            # a day at most: call_later's clock is monotonic, the certificates' is not
            delay = min(nxt - now + 1.0, 86400.0)
            self._cert_timer = asyncio.get_running_loop().call_later(delay,
                                                                     self._plane_errors_changed)
        return certexpiry.overlay(statuses, t.certificates, now) if found else statuses

    def _plane_errors_changed(self) -> None:
        if self.translation is None:
            return
        task = asyncio.get_running_loop().create_task(self._publish_status(self.translation))
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def _apply_plane(self, name: str, coro: Any) -> bool:
        try:
            await coro
            return True
        except Exception as exc:
            self.metrics.errors.labels(name).inc()
            self.not_ready_reason = f"{name} data plane failed to apply the configuration: {exc!r}"
            log.exception("%s data plane failed to apply generation %d", name, self.generation)
            return False

    # -- admin API ---------------------------------------------------------------

    def admin(self) -> AdminServer:
        return AdminServer({
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/status": self._status,
            "/problems": self._problems,
            "/config_dump": self._config_dump,
            "/endpoint_health": self._endpoint_health,
            "/l4": self._l4,
            "/metrics": self._metrics,
        })

    async def _healthz(self) -> Response:
        return text_response("ok\n")

    async def drain(self, delay: float) -> None:
        """Shutting down (SIGTERM), before the listeners close: /readyz says not ready at
        once, every L7 response closes its connection, and the listeners keep accepting
        for ``delay`` seconds, so that load balancers take this gateway out of their pools
        before it stops accepting. The caller then closes the planes (drain timeout)."""
        self.shutting_down = True
        if self.l7 is not None:
            try:
                await self.l7.drain()
            except Exception:
                log.exception("L7 drain failed")
        if delay > 0:
            log.info("not ready; still accepting for %gs (--drain-delay)", delay)
            await asyncio.sleep(delay)

    async def _readyz(self) -> Response:
        """Not ready until the first configuration is live in every data plane, while a
        configured listener is not served (L7: no worker running, a listener that cannot
        be opened or stopped accepting, a worker out of file descriptors; L4: a frontend
        the kernel or userspace plane could not program, or whose pinned maps drifted),
        and once shutting down.

        After that, trouble with the source (an API server outage) does not make the
        gateway unready: it keeps serving the last good configuration, and readiness
        failing on every node at once would take the whole gateway out of its load
        balancers. The body says so.
        """
        if self.shutting_down:
            return text_response("not ready: shutting down\n", 503)
        trouble = confloop.trouble(self)
        serving = await self.l7.health() if self.l7 is not None and self.ready.is_set() else []
        if self.l4 is not None and self.translation is not None and self.ready.is_set():
            failures = planestatus.l4_listener_failures(self.translation.l4, self.l4.errors())
            serving += [f"listener {name} not served: {msg}"
                        for name, msg in sorted(failures.items())]
        if serving:
            return text_response(f"not ready: {'; '.join(serving)}\n", 503)
        if self.ready.is_set() and not self.not_ready_reason:
            if trouble:
                return text_response(f"ready, serving the last good configuration; {trouble}\n")
            return text_response("ready\n")
        suffix = f"; {trouble}" if trouble else ""
        return text_response(f"not ready: {self.not_ready_reason}{suffix}\n", 503)

    async def _status(self) -> Response:
        return json_response(self.status.as_list(self.store.get_key))

    async def _problems(self) -> Response:
        return json_response({"problems": [
            {"origin": p.origin, "object": str(p.key) if p.key else None, "field": p.field,
             "message": p.message, "text": str(p)} for p in self.problems]})

    async def _config_dump(self) -> Response:
        t = self.translation
        l4 = _with_generation(t.l4, self.generation).to_dict() if t else None
        if l4 is not None and self.l4 is not None:
            # what the L4 plane holds besides its config: mode, errors, frontend ids,
            # programmed endpoints, spliced connections (kgw-inspect reads these)
            l4.update(self.l4.config_dump())
        return json_response(redact({
            "generation": self.generation,
            "l7": _with_generation(t.l7, self.generation).to_dict() if t else None,
            "l4": l4,
            "l4_mode": getattr(self.l4, "mode", None),
            "endpoint_health": await self.endpoint_state(),
        }))

    async def endpoint_state(self) -> dict[str, Any] | None:
        """Backend endpoint health (active checks, outlier ejections), None without an L7
        plane that keeps it."""
        get = getattr(self.l7, "endpoint_state", None)
        if get is None:
            return None
        try:
            return await get()
        except Exception as exc:  # (the page must answer whatever the plane does)
            log.warning("collecting endpoint health failed: %r", exc)
            return {"error": str(exc) or type(exc).__name__}

    async def _endpoint_health(self) -> Response:
        state = await self.endpoint_state()
        if state is None:
            return json_response({"error": "no L7 data plane"}, 404)
        return json_response(state)

    async def _l4(self) -> Response:
        """The L4 plane's counters and the flows a userspace path holds, with the L4
        configuration they belong to: what ``kgw-inspect`` shows when no kernel maps hold
        them (the userspace mode)."""
        if self.l4 is None or not hasattr(self.l4, "inspect"):
            return json_response({"mode": None, "error": "no L4 data plane"}, 404)
        t = self.translation
        return json_response({**self.l4.inspect(),
                              "config": redact(_with_generation(t.l4, self.generation).to_dict())
                              if t else None})

    async def _metrics(self) -> Response:
        body = generate_latest(self.metrics.registry)
        body += certexpiry.render(self.translation.certificates if self.translation else ())
        if self.l4 is not None and hasattr(self.l4, "metrics"):
            body += self.l4.metrics()
        if self.l7 is not None:
            try:
                body += await self.l7.metrics()
            except Exception as exc:
                log.warning("collecting L7 metrics failed: %r", exc)
        return 200, "text/plain; version=0.0.4; charset=utf-8", body


def _with_generation(config: Any, generation: int) -> Any:
    return dataclasses.replace(config, generation=generation)


async def serve_admin(sup: Supervisor, address: str) -> AdminServer:
    host, _, port = address.rpartition(":")
    server = sup.admin()
    await server.start(host.strip("[]") or "127.0.0.1", int(port))
    return server
