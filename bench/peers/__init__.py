"""Peer key servers, measured with the same payloads and concurrency as the agent.

``install`` gives each peer a virtualenv of its own under ``bench/.peers``
(from PyPI, once). ``servers`` starts each on 127.0.0.1 with a fresh
port, and ``tls`` makes the throwaway certificates the PyKMIP server
needs. ``driver`` runs and measures their loads from the benchmark, and
``client`` is the program that runs inside a peer's virtualenv and sends
the requests.
"""
