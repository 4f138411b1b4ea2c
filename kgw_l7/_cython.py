"""Stands in for the ``cython`` module where Cython is not installed (it only builds the
extensions, scripts/build_ext.py).

A compiled module's .pxd may declare constants as a ``cpdef enum`` (C constants in the
compiled code, an enum in Python); its .py defines the same names only when it runs
interpreted, under ``if not cython.compiled:``, a test Cython resolves when it compiles.
"""

compiled = False
