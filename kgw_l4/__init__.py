"""kgw's L4 data plane: TCPRoute/TLS passthrough load balancing in the kernel (TC/XDP
NAT with Maglev and connection tracking, sockmap splicing), with a userspace fallback.

Entry point for the supervisor: ``kgw_l4.plane.open_plane``. Operators: ``kgw-inspect``.
"""
