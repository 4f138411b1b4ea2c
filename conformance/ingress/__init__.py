"""The upstream Ingress controller conformance suite, replayed against a standalone kgw.

The suite's own ``.feature`` files (kubernetes-sigs/ingress-controller-conformance) run
unmodified under pytest-bdd (``features.py``), with step definitions for a standalone
``kgw run`` instead of a cluster (``world.py``): "Given an Ingress resource" writes the
Ingress, its Services and EndpointSlices into kgw's config directory, each backend
Service gets ``kgw echo`` processes answering as the upstream echo server does, "The
Ingress status shows the IP address" reads kgw's ``/status``, and requests go to that
address as upstream's Go client sends them (``client.py``).

``python -m conformance.ingress --suite DIR`` (``make ingress-conformance``) prints the
scenarios passed per feature.
"""
