"""Which key states allow which operations.

The table follows Alibaba Cloud KMS ("Impact of CMK states on API
calls"): each operation class lists the error raised in each state, and
a state that is absent allows the operation. All such errors are 409.
"""

from __future__ import annotations

from client.errors import (
    KeyDisabledError, KeyPendingDeletionError, KeyPendingImportError, KmsError,
    StateModifiedFailedError,
)
from agent.store.records import (
    DISABLED, PENDING_DELETION, PENDING_IMPORT, KeyRecord,
)

# Encrypt, Decrypt, ReEncrypt, GenerateDataKey*, CreateKeyVersion,
# UpdateRotationPolicy.
USE = "use"
# EnableKey, DisableKey.
TOGGLE = "toggle"
# ScheduleKeyDeletion, CreateAlias, ImportKeyMaterial.
SCHEDULE = "schedule"
# CancelKeyDeletion.
CANCEL = "cancel"
# UpdateKeyDescription, TagResource, UntagResource, UpdateAlias target,
# SetDeletionProtection.
EDIT = "edit"

_REJECTIONS: dict[str, dict[str, type[KmsError]]] = {
    USE: {
        DISABLED: KeyDisabledError,
        PENDING_DELETION: KeyPendingDeletionError,
        PENDING_IMPORT: KeyPendingImportError,
    },
    TOGGLE: {
        PENDING_DELETION: StateModifiedFailedError,
        PENDING_IMPORT: StateModifiedFailedError,
    },
    SCHEDULE: {PENDING_DELETION: StateModifiedFailedError},
    CANCEL: {
        "Enabled": StateModifiedFailedError,
        DISABLED: StateModifiedFailedError,
        PENDING_IMPORT: StateModifiedFailedError,
    },
    EDIT: {PENDING_DELETION: KeyPendingDeletionError},
}


def require_state(key: KeyRecord, operation_class: str) -> None:
    """Raise the 409 error for ``key``'s state, if the class forbids it."""
    error = _REJECTIONS[operation_class].get(key.state)
    if error is not None:
        raise error(f"The key {key.key_id} is in state {key.state}.")
