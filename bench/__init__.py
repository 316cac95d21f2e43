"""Benchmarks of kms-agent against its floors: the raw HSM and a bare echo.

``python bench/run.py`` is the entry point; bench/README.md explains
each figure and records runs. The modules split by role: ``floors``
(in-process crypto loops), ``load`` (closed-loop clients on a socket),
``echo_server`` (the protocol with no work behind it), ``processes``
(the servers under test), ``stats`` and ``report`` (figures, table, JSON).
"""
