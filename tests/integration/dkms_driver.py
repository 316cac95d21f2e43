"""Run calls of the dedicated-instance SDK (alibabacloud-dkms-gcs) as JSON.

The SDK cannot share the agent's virtualenv (its pyOpenSSL pin needs an
older cryptography), so tests run this script with the interpreter of
``var/dkms-sdk`` and exchange JSON on stdin and stdout. The input is::

    {"endpoint": "127.0.0.1:PORT", "client_key_file": PATH, "password": PW,
     "calls": [{"api": "encrypt", "request": {"KeyId": ..., ...}}, ...]}

Bytes travel as ``{"b64": TEXT}``. The output is one entry per call:
the response map, or ``{"error": {"code", "message", "status"}}``.
"""

import base64
import json
import sys

from openapi.models import Config
from openapi_util.models import RuntimeOptions
from sdk import models
from sdk.client import Client
from Tea.exceptions import TeaException, UnretryableException

REQUESTS = {
    "encrypt": models.EncryptRequest, "decrypt": models.DecryptRequest,
    "advance_encrypt": models.AdvanceEncryptRequest,
    "generate_data_key": models.GenerateDataKeyRequest,
    "get_secret_value": models.GetSecretValueRequest,
    "generate_random": models.GenerateRandomRequest, "sign": models.SignRequest,
    "verify": models.VerifyRequest, "get_public_key": models.GetPublicKeyRequest,
}


def from_json(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, dict):
        return {key: from_json(item) for key, item in value.items()}
    return value


def to_json(value):
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()
                if key != "responseHeaders"}
    if isinstance(value, list):
        return [to_json(item) for item in value]
    return value


def run_call(client, call):
    request = REQUESTS[call["api"]]().from_map(from_json(call["request"]))
    runtime = RuntimeOptions(autoretry=False)
    try:
        response = getattr(client, call["api"] + "_with_options")(request, runtime)
    except UnretryableException as exc:
        exc = exc.inner_exception if isinstance(
            getattr(exc, "inner_exception", None), TeaException) else exc
        return {"error": {"code": getattr(exc, "code", None),
                          "message": str(exc), "status": None}}
    except TeaException as exc:
        return {"error": {"code": exc.code, "message": exc.message,
                          "status": (exc.data or {}).get("httpCode")}}
    return to_json(response.to_map())


def main():
    job = json.load(sys.stdin)
    config = Config(protocol=job.get("protocol", "http"), endpoint=job["endpoint"],
                    client_key_file=job["client_key_file"], password=job["password"],
                    ca_file_path=job.get("ca_file_path"))
    client = Client(config)
    json.dump([run_call(client, call) for call in job["calls"]], sys.stdout)


if __name__ == "__main__":
    main()
