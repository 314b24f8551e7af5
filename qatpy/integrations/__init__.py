"""Adapters that plug qatpy keys into libraries with their own key types.

Each integration is a submodule with its own optional dependency, imported
only when you ask for it: ``import qatpy`` never imports any of them.

- `qatpy.integrations.tlslite`: tlslite-ng (``pip install tlslite-ng``), a
  pure-Python TLS 1.2/1.3 server whose handshake signatures run on a qatpy
  engine.
"""
