"""Benchmarks of kms-agent against its floors and against peer key servers.

``python bench/run.py`` is the entry point; bench/README.md explains
each figure and target and records runs. The modules split by role:
``suite`` (the servers, fixtures and rounds of one run), ``floors``
(in-process crypto loops), ``load`` (closed-loop clients on a socket),
``echo_server`` (the protocol with no work behind it), ``processes``
(child servers), ``population`` (filling a large store), ``files``
(encrypt-file), ``peers`` (PyKMIP, moto and OpenBao), ``catalog``,
``stats``, ``ratios`` and ``report`` (figures, targets, table, JSON),
and ``plot`` (the image, drawn in its own virtualenv).
"""
