"""Development tooling for a source checkout: not part of the ``logexport`` distribution.

``devtools.services`` starts private PostgreSQL, S3 (moto) and SMTP servers for the tests,
``scripts/demo`` (``logexport demo``) and the benchmarks. The wheel ships ``logexport`` only,
so nothing here is importable from an installed package.
"""
