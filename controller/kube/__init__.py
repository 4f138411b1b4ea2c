"""Kubernetes mode: the API server as the source, status written back, one writer per cluster.

``source.KubeSource`` lists and watches what the file source reads and yields the same
batches; ``status_writer.KubeStatusWriter`` writes Gateway API status through the status
subresource; ``leader.LeaderElector`` keeps that writer to one agent per cluster with a
``coordination.k8s.io`` Lease. Everything below the source (store, translation, status
book, data planes) is shared with standalone mode.
"""
