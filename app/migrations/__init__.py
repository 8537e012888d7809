"""Frozen schema migrations (``0001_initial.py``, ``0002_...``), run by ``app.schema``.

The files are loaded by path by ``playhouse.migrations.Runner``, never imported as
modules; this package exists so that ``pip install`` ships them.
"""
