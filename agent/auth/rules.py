"""The single table from operation name to permission template and targets.

``RULES[name]`` names the templates that grant an operation and where the
request names its resources (``Target``): a key reference, a ciphertext
blob, an alias, a secret, a certificate, the key, secret or certificate
collection, or the agent itself. An operation missing from the table is
allowed only to principals that hold ``administrator`` on ``agent`` and
every keystore; a test checks that every operation the agent serves has
an entry.

Key and secret policies name operations as actions (``kms:Encrypt``).
ReEncrypt checks ``kms:ReEncryptFrom`` on the source key and
``kms:ReEncryptTo`` on the destination; ``kms:ReEncrypt`` grants both.
"""

from __future__ import annotations

import dataclasses

from agent.auth.policy import ADMINISTRATOR, KEY_USER, SECRET_USER
from agent.keys.ops import ASYMMETRIC_SOURCE

# Target kinds: where a request names what it acts on.
KEY_REF = "key-ref"            # a KeyId, alias or ARN parameter
KEY_BLOB = "key-blob"          # a ciphertext blob naming a key version
KEY_ALIAS = "key-alias"        # an alias name; the target is its key
KEY_NEW = "key-new"            # a key to create, in the keystore named by param
KEYS = "keys"                  # the key collection (key/*)
SECRET_REF = "secret-ref"      # a SecretName parameter
SECRET_LIST = "secret-list"    # a list of {"SecretName": ...} maps
SECRET_NEW = "secret-new"      # a secret to create; param names it
SECRETS = "secrets"            # the secret collection (secret/*)
AGENT_ITSELF = "agent"         # the agent: client keys, policy reload
ANY_GRANT = "any-grant"        # no resource: any Allow of the templates
KEYSTORE = "keystore"          # a keystore named by param: any Allow, if bound
CERTIFICATE_REF = "certificate-ref"  # a CertificateId parameter
CERTIFICATE_NEW = "certificate-new"  # a certificate to create, in param's keystore
CERTIFICATES = "certificates"        # the certificate collection (certificate/*)

ADMIN = frozenset({ADMINISTRATOR})
CRYPTO = frozenset({KEY_USER})
KEY_READ = frozenset({KEY_USER, ADMINISTRATOR})
SECRET_READ = frozenset({SECRET_USER, ADMINISTRATOR})
ANYONE = frozenset({KEY_USER, SECRET_USER, ADMINISTRATOR})


@dataclasses.dataclass(frozen=True)
class Target:
    """One resource a request names.

    ``param`` is the request parameter that names it; an absent optional
    parameter names nothing. ``actions`` overrides the key policy action
    (default ``kms:<operation>``), ``templates`` the rule's templates,
    and ``context`` names the encryption context parameter that policy
    conditions test.
    """

    kind: str
    param: str | None = None
    actions: tuple[str, ...] = ()
    templates: frozenset[str] | None = None
    context: str | None = "EncryptionContext"
    # Parameters that make this target name nothing when any one is present.
    unless: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Rule:
    """The templates that grant an operation and the resources it names."""

    templates: frozenset[str]
    targets: tuple[Target, ...]


def _key(templates: frozenset[str], param: str = "KeyId") -> Rule:
    return Rule(templates, (Target(KEY_REF, param),))


def _secret(templates: frozenset[str]) -> Rule:
    return Rule(templates, (Target(SECRET_REF, "SecretName"),))


def _certificate(templates: frozenset[str]) -> Rule:
    return Rule(templates, (Target(CERTIFICATE_REF, "CertificateId"),))


_ADMIN_KEY = _key(ADMIN)
_CRYPTO_KEY = _key(CRYPTO)
_READ_KEY = _key(KEY_READ)
_ADMIN_SECRET = _secret(ADMIN)
_RE_ENCRYPT_FROM = ("kms:ReEncrypt", "kms:ReEncryptFrom")
_RE_ENCRYPT_TO = ("kms:ReEncrypt", "kms:ReEncryptTo")

RULES: dict[str, Rule] = {
    # Key lifecycle and metadata.
    "CreateKey": Rule(ADMIN, (Target(KEY_NEW, "DKMSInstanceId"),)),
    "DescribeKey": _READ_KEY,
    "ListKeys": Rule(KEY_READ, (Target(KEYS),)),
    "EnableKey": _ADMIN_KEY,
    "DisableKey": _ADMIN_KEY,
    "UpdateKeyDescription": _ADMIN_KEY,
    "ScheduleKeyDeletion": _ADMIN_KEY,
    "CancelKeyDeletion": _ADMIN_KEY,
    "SetDeletionProtection": _key(ADMIN, "ProtectedResourceArn"),
    "UpdateRotationPolicy": _ADMIN_KEY,
    "CreateKeyVersion": _ADMIN_KEY,
    "DescribeKeyVersion": _READ_KEY,
    "ListKeyVersions": _READ_KEY,
    "GetKeyPolicy": _ADMIN_KEY,
    "SetKeyPolicy": _ADMIN_KEY,
    "GetParametersForImport": _ADMIN_KEY,
    "ImportKeyMaterial": _ADMIN_KEY,
    "DeleteKeyMaterial": _ADMIN_KEY,
    # Aliases and tags.
    "CreateAlias": _ADMIN_KEY,
    "UpdateAlias": Rule(ADMIN, (Target(KEY_ALIAS, "AliasName"),
                                Target(KEY_REF, "KeyId"))),
    "DeleteAlias": Rule(ADMIN, (Target(KEY_ALIAS, "AliasName"),)),
    "ListAliases": Rule(KEY_READ, (Target(KEYS),)),
    "ListAliasesByKeyId": _READ_KEY,
    "TagResource": Rule(ADMIN, (Target(KEY_REF, "KeyId"),
                                Target(SECRET_REF, "SecretName"),
                                Target(CERTIFICATE_REF, "CertificateId"))),
    "UntagResource": Rule(ADMIN, (Target(KEY_REF, "KeyId"),
                                  Target(SECRET_REF, "SecretName"),
                                  Target(CERTIFICATE_REF, "CertificateId"))),
    "ListResourceTags": _READ_KEY,
    # Cryptography.
    "Encrypt": _CRYPTO_KEY,
    "Decrypt": Rule(CRYPTO, (Target(KEY_BLOB, "CiphertextBlob"),)),
    # With an asymmetric source (ASYMMETRIC_SOURCE), CiphertextBlob does not
    # name a key, so SourceKeyId is checked instead of the blob.
    "ReEncrypt": Rule(CRYPTO, (
        Target(KEY_BLOB, "CiphertextBlob", _RE_ENCRYPT_FROM,
               context="SourceEncryptionContext", unless=ASYMMETRIC_SOURCE),
        Target(KEY_REF, "SourceKeyId", _RE_ENCRYPT_FROM, context=None),
        Target(KEY_REF, "DestinationKeyId", _RE_ENCRYPT_TO,
               context="DestinationEncryptionContext"))),
    "GenerateDataKey": _CRYPTO_KEY,
    "GenerateDataKeyWithoutPlaintext": _CRYPTO_KEY,
    "GenerateAndExportDataKey": _CRYPTO_KEY,
    "ExportDataKey": Rule(CRYPTO, (Target(KEY_BLOB, "CiphertextBlob"),)),
    "AsymmetricEncrypt": _CRYPTO_KEY,
    "AsymmetricDecrypt": _CRYPTO_KEY,
    "AsymmetricSign": _CRYPTO_KEY,
    "AsymmetricVerify": _CRYPTO_KEY,
    "GetPublicKey": _CRYPTO_KEY,
    "GenerateMac": _CRYPTO_KEY,
    "VerifyMac": _CRYPTO_KEY,
    "GetRandomPassword": Rule(ANYONE, (Target(ANY_GRANT),)),
    "GenerateRandom": Rule(ANYONE, (Target(KEYSTORE, "DKMSInstanceId"),)),
    # Secrets.
    "CreateSecret": Rule(ADMIN, (
        Target(SECRET_NEW, "SecretName"),
        Target(KEY_REF, "EncryptionKeyId", ("kms:GenerateDataKey",),
               templates=CRYPTO, context=None))),
    "GetSecretValue": _secret(frozenset({SECRET_USER})),
    "BatchGetSecretValue": Rule(frozenset({SECRET_USER}),
                                (Target(SECRET_LIST, "SecretsList"),)),
    "DescribeSecret": _secret(SECRET_READ),
    "ListSecretVersionIds": _secret(SECRET_READ),
    "WaitSecretChange": _secret(SECRET_READ),
    "ListSecrets": Rule(SECRET_READ, (Target(SECRETS),)),
    "PutSecretValue": _ADMIN_SECRET,
    "UpdateSecret": _ADMIN_SECRET,
    "UpdateSecretVersionStage": _ADMIN_SECRET,
    "UpdateSecretRotationPolicy": _ADMIN_SECRET,
    "RotateSecret": _ADMIN_SECRET,
    "DeleteSecret": _ADMIN_SECRET,
    "RestoreSecret": _ADMIN_SECRET,
    "GetSecretPolicy": _ADMIN_SECRET,
    "SetSecretPolicy": _ADMIN_SECRET,
    # The agent's own access control.
    "CreateClientKey": Rule(ADMIN, (Target(AGENT_ITSELF),)),
    "ListClientKeys": Rule(ADMIN, (Target(AGENT_ITSELF),)),
    "RevokeClientKey": Rule(ADMIN, (Target(AGENT_ITSELF),)),
    "ReloadPolicies": Rule(ADMIN, (Target(AGENT_ITSELF),)),
    "DescribeAgentCache": Rule(ADMIN, (Target(AGENT_ITSELF),)),
    # Health lists every keystore, so a tenant may not read it; any reply,
    # a refusal included, still shows that the agent is live.
    "DescribeAgentHealth": Rule(ADMIN, (Target(AGENT_ITSELF),)),
    "CreateAgentBackup": Rule(ADMIN, (Target(AGENT_ITSELF),)),
    "GetAgentBackupPart": Rule(ADMIN, (Target(AGENT_ITSELF),)),
    "DeleteAgentBackup": Rule(ADMIN, (Target(AGENT_ITSELF),)),
    "GetCallerIdentity": Rule(frozenset(), ()),
    # Certificates: management and export are for administrators, and
    # cryptography with the certificate's key for key users.
    "CreateCertificate": Rule(ADMIN, (Target(CERTIFICATE_NEW, "DKMSInstanceId"),)),
    "ImportCertificate": Rule(ADMIN, (Target(CERTIFICATE_NEW, "DKMSInstanceId"),)),
    "UploadCertificate": _certificate(ADMIN),
    "UpdateCertificateStatus": _certificate(ADMIN),
    "DeleteCertificate": _certificate(ADMIN),
    "ExportCertificate": _certificate(ADMIN),
    "GetCertificate": _certificate(KEY_READ),
    "DescribeCertificate": _certificate(KEY_READ),
    "ListCertificates": Rule(KEY_READ, (Target(CERTIFICATES),)),
    "CertificatePrivateKeySign": _certificate(CRYPTO),
    "CertificatePublicKeyVerify": _certificate(CRYPTO),
    "CertificatePublicKeyEncrypt": _certificate(CRYPTO),
    "CertificatePrivateKeyDecrypt": _certificate(CRYPTO),
}


def key_policy_actions() -> frozenset[str]:
    """Return every action a key or secret policy may name."""
    return frozenset({f"kms:{name}" for name in RULES}
                     | {"kms:ReEncryptFrom", "kms:ReEncryptTo"})
