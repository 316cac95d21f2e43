"""The HTTP gateway: the official Alibaba Cloud SDKs, served by the agent.

Two protocols share one HTTP/1.1 server (``server``): the OpenAPI RPC
protocol of ``alibabacloud-kms20160120`` and the Secrets Manager clients
(``openapi``, signatures in ``signing``), and the dedicated-instance
protobuf protocol of ``alibabacloud-dkms-gcs`` (``dkms``, ``dkms_apis``,
``messages``, ``protobuf``). Both run requests through the daemon's
``Dispatcher``, so every operation, stage and log line is the socket's.
Callers authenticate with an AccessKey pair or an RSA client key from
the credentials file (``credentials``); each names a principal
(``identity``). ``settings`` is the ``[gateway]`` section and
``runtime`` starts the gateway in the daemon.
"""
