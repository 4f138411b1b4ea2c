"""kgw's policy attachment (GEP-713): TrafficPolicy and SecurityPolicy.

A policy names its targets (``spec.targetRefs``: a Gateway, one of its listeners by
``sectionName``, an HTTPRoute or GRPCRoute, or one of its named rules) and carries
*sections*: top-level spec fields, each owned by one module here (its schema, its
validation and what it compiles to for the data planes). Adding a feature is one module
and one line in :mod:`.registry`.

- :mod:`.section`  the Section record every section module exports
- :mod:`.registry` the sections of each kind (the one list to extend)
- :mod:`.attach`   pure: targets, conflicts (older wins), per-section precedence
  (route rule > route > listener > Gateway) and each policy's outcome per target
- :mod:`.status`   pure: outcomes -> ``status.ancestors`` (PolicyAncestorStatus)
- :mod:`.crd`      the CRD manifests in deploy/, generated from the same schema nodes
"""

# The schema package builds the policy kinds' schemas from the registry below; loading
# it first means whichever of the two is imported first, the registry is complete
# when controller.schema.kinds reads it.
import controller.schema  # noqa: E402,F401
