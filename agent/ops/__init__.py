"""Running the agent as a service: the parts the operator and init see.

``notify`` speaks the systemd notification protocol (READY, STATUS,
WATCHDOG, STOPPING) and ``activation`` takes a listening socket passed by
systemd. ``reload`` runs the SIGHUP hooks, ``health`` serves
DescribeAgentHealth, ``metrics`` and ``instrument`` keep the Prometheus
registry, and ``backup`` writes and restores snapshots of the store. ``runtime`` wires
them into the daemon, so ``agent.daemon`` needs only a few calls.
"""
