"""TagResource and UntagResource on keys, secrets and certificates.

A request names exactly one resource: ``KeyId`` (id, alias or ARN),
``SecretName`` (name or ARN) or ``CertificateId``. Tags are stored per
resource in the store's tags table; TagResource adds or overwrites, and
UntagResource removes the named tag keys, ignoring unknown ones. A key
must be in a state that allows edits, and a secret must not be in its
recovery window. ListResourceTags stays a Key Service operation, as in
the cloud, while DescribeSecret and DescribeCertificate show the tags of
their resources.
"""

from __future__ import annotations

from typing import Any

from agent.context import RequestContext
from agent.keys import states
from agent.keys.aliases import MAX_TAGS_PER_RESOURCE, validate_tags
from agent.keys.ops import tags_param
from agent.rpc.dispatch import WRITE, Operation
from agent.rpc.params import LIST, Param
from agent.store.base import RESOURCE_KEY, RESOURCE_SECRET, ConflictError, LimitError
from agent.store.certificates import RESOURCE_CERTIFICATE
from client.errors import (
    InternalFailureError, InvalidParameterError, LimitExceededError,
    MissingParameterError,
)

# The parameters that name the tagged resource; a request sets exactly one.
RESOURCE_PARAMS = ("KeyId", "SecretName", "CertificateId")
MAX_TAGS_PER_REQUEST = 10


def _resource_param(values: dict[str, Any]) -> str:
    named = [name for name in RESOURCE_PARAMS if name in values]
    if not named:
        raise MissingParameterError(
            "Set one of KeyId, SecretName or CertificateId.")
    if len(named) > 1:
        raise InvalidParameterError(
            f"Set only one of KeyId, SecretName or CertificateId, not "
            f"{' and '.join(named)}.")
    return named[0]


async def _resource_of(services: Any, ctx: RequestContext, param: str,
                       reference: str) -> tuple[str, str]:
    # Return the store's resource type and id after checking that the
    # resource exists and may be edited.
    if param == "KeyId":
        key = await services.keys.resolve(reference)
        states.require_state(key, states.EDIT)
        ctx.key_id = key.key_id
        return RESOURCE_KEY, key.key_id
    if param == "SecretName":
        secret = await services.secrets.get_secret(reference)
        return RESOURCE_SECRET, secret.secret_name
    record = await services.certificates.get(reference)
    return RESOURCE_CERTIFICATE, record.certificate_id


async def tag_resource(services: Any, ctx: RequestContext, values: dict) -> dict:
    """TagResource: add or overwrite up to 10 tags on one resource."""
    param = _resource_param(values)
    tags = tags_param(values["Tags"])
    if not 1 <= len(tags) <= MAX_TAGS_PER_REQUEST:
        raise InvalidParameterError(
            f"Tags must contain 1 to {MAX_TAGS_PER_REQUEST} tags.")
    validate_tags(tags)
    resource_type, resource_id = await _resource_of(services, ctx, param,
                                                    values[param])
    try:
        await services.keys.store.set_tags(resource_type, resource_id, tags,
                                           max_tags=MAX_TAGS_PER_RESOURCE)
    except LimitError:
        raise LimitExceededError(
            f"A {resource_type} carries at most {MAX_TAGS_PER_RESOURCE} tags.") from None
    except ConflictError:
        # Deleted after the lookup, so the lookup now reports it missing.
        await _resource_of(services, ctx, param, values[param])
        raise InternalFailureError() from None
    return {}


async def untag_resource(services: Any, ctx: RequestContext, values: dict) -> dict:
    """UntagResource: remove tag keys from one resource; unknown keys are ignored."""
    param = _resource_param(values)
    tag_keys = values["TagKeys"]
    if not all(isinstance(tag_key, str) for tag_key in tag_keys):
        raise InvalidParameterError("TagKeys must be a list of strings.")
    resource_type, resource_id = await _resource_of(services, ctx, param,
                                                    values[param])
    await services.keys.store.remove_tags(resource_type, resource_id, tag_keys)
    return {}


_REFERENCES = (Param("KeyId", low=1, high=512), Param("SecretName", low=1, high=512),
               Param("CertificateId", low=1, high=512))

OPERATIONS = [
    Operation("TagResource", tag_resource,
              (*_REFERENCES, Param("Tags", LIST, required=True)),
              permission="kms:TagResource", group=WRITE),
    Operation("UntagResource", untag_resource,
              (*_REFERENCES, Param("TagKeys", LIST, required=True, low=1, high=10)),
              permission="kms:UntagResource", group=WRITE),
]
