# kms-agent as a container, for running next to an application as a sidecar.
#
#   docker build -t kms-agent .
#   docker run -d --name kms-agent -v kms-state:/var/lib/kms-agent \
#       -v kms-socket:/run/kms-agent kms-agent
#
# The first start creates a SoftHSM2 token and a configuration on the state
# volume (deploy/entrypoint.sh); the socket volume is shared with the
# application, which reaches the agent as a member of group 10001.
# deploy/compose.yaml and deploy/kubernetes.yaml are complete examples, and
# docs/operations.md explains them, including a real HSM instead of SoftHSM2.
FROM python:3.11-slim-bookworm

# SoftHSM2 from Debian; no compiler is needed, since every dependency has a
# manylinux wheel for x86_64.
RUN apt-get update \
    && apt-get install -y --no-install-recommends softhsm2 \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid and gid, so volumes keep their owner across image versions
# and the application can be given the group.
RUN groupadd --system --gid 10001 kms-agent \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/kms-agent \
        --shell /usr/sbin/nologin kms-agent

WORKDIR /opt/kms-agent
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY client ./client
RUN pip install --no-cache-dir . \
    && python -m compileall -q /opt/kms-agent

COPY deploy/entrypoint.sh /usr/local/bin/kms-agent-entrypoint
# Docker copies these owners and modes into new named volumes.
RUN chmod 0755 /usr/local/bin/kms-agent-entrypoint \
    && install -d -o kms-agent -g kms-agent -m 0700 /var/lib/kms-agent \
    && install -d -o kms-agent -g kms-agent -m 0750 /run/kms-agent

USER 10001:10001
ENV KMS_AGENT_SOCKET=/run/kms-agent/agent.sock \
    PYTHONDONTWRITEBYTECODE=1
VOLUME ["/var/lib/kms-agent", "/run/kms-agent"]
# Exit 0 when ready, 3 when a keystore or the store is down.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s \
    CMD ["kmsctl", "health"]
# The agent drains in-flight requests on SIGTERM (agent.drain_timeout).
STOPSIGNAL SIGTERM
ENTRYPOINT ["kms-agent-entrypoint"]
