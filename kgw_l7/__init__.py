"""kgw's userspace L7 data plane (HTTP/1.1 and HTTPS reverse proxy).

Modules, from the wire up:

* ``events`` -- kgw's HTTP event records; ``h1`` -- sans-IO HTTP/1.1 over httptools.
* ``router`` -- ``L7Config`` compiled into matchers and prebuilt filter operations.
* ``upstream`` -- backend connections and keep-alive pools; ``tls`` -- SNI certificates.
* ``proxy`` -- client connections; ``exchange`` -- one request (filters, tries, relay).
* ``worker`` -- one worker process; ``plane`` -- ``L7Plane``, the supervisor's API.
* ``stats``/``metrics`` -- counters, access log, Prometheus exposition.
* ``echo`` -- ``kgw echo``, the conformance-compatible echo backend.
"""
