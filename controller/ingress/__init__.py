"""Kubernetes Ingress (networking.k8s.io/v1), served by the Gateway API translation.

An Ingress of ours becomes Gateway API objects (convert.py): one Gateway owned by kgw
with the Ingress ports, and one HTTPRoute per Ingress host. Translation reads them
beside the user's own objects (overlay.py), so Ingresses and HTTPRoutes share one
router and one precedence implementation; status.py carries the result back to each
Ingress's ``status.loadBalancer``, and the problems of the generated objects back to
the Ingress they came from. The same conversion prints the objects for migration
(``kgw translate --to-gateway-api``).
"""
