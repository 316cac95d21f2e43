"""The Certificates Manager operations, with the API's names and fields.

Handlers take validated parameters, call ``service`` or ``crypto`` and
shape the reply (``describe``). Lifecycle and export need the
administrator template, reads any key template, and cryptography the
key-user template (``agent.auth.rules``). CertificateChain is one PEM
text holding the issuers in any order; the client library joins a list.
"""

from __future__ import annotations

from typing import Any

from agent.certificates import bundle, crypto, describe
from agent.certificates.csr import KEY_SPECS
from agent.certificates.service import STATUSES, CertificateService
from agent.context import RequestContext
from agent.keys.aliases import MAX_TAGS_PER_RESOURCE
from agent.keys.ops import PAGE_NUMBER, PAGE_SIZE, tags_param
from agent.keystore import asymmetric, sm2
from agent.rpc.dispatch import CREATE, CRYPTO, READ, WRITE, Operation
from agent.rpc.params import BOOL, BYTES, LIST, PLAINTEXT, Param
from agent.store.certificates import RESOURCE_CERTIFICATE

CERTIFICATE_ID = Param("CertificateId", required=True, low=1, high=128)
MAX_PEM_CHARS = 65536
MAX_CHAIN_CHARS = 262144
MAX_SIGNATURE_BYTES = 1024


def _service(services: Any) -> CertificateService:
    return services.certificates


def _creator(ctx: RequestContext) -> str:
    return ctx.principal or str(ctx.peer.uid if ctx.peer.uid is not None else "local")


def _tags(values: dict[str, Any]) -> dict[str, str]:
    return tags_param(values.get("Tags", []))


async def create_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _service(services)
    record = await service.create(
        key_spec=values["KeySpec"], subject=values["Subject"],
        alternative_names=values.get("SubjectAlternativeNames", []),
        exportable=values.get("ExportablePrivateKey", True), tags=_tags(values),
        keystore_name=values.get("DKMSInstanceId"), creator=_creator(ctx))
    return {"CertificateId": record.certificate_id, "Arn": service.arn(record),
            "Csr": record.csr}


async def import_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _service(services)
    record = await service.import_pkcs12(
        blob=values["PKCS12Blob"], passphrase=values.get("Passphrase"),
        exportable=values.get("ExportablePrivateKey", True), tags=_tags(values),
        keystore_name=values.get("DKMSInstanceId"), creator=_creator(ctx))
    return {"CertificateId": record.certificate_id, "Arn": service.arn(record)}


async def upload_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    await _service(services).upload(values["CertificateId"], values["Certificate"],
                                    values.get("CertificateChain"))
    return {}


async def get_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _service(services)
    record = await service.get(values["CertificateId"])
    return describe.get_reply(record, service.path(record))


async def describe_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _service(services)
    record = await service.get(values["CertificateId"])
    tags = await service.store.get_tags(RESOURCE_CERTIFICATE, record.certificate_id)
    return describe.describe(service, record, tags)


async def list_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    service = _service(services)
    number, size = values.get("PageNumber", 1), values.get("PageSize", 10)
    scope = ctx.keystore_scope()
    records, total = [], 0
    if scope is not None:
        records, total = await service.store.list_certificates(
            (number - 1) * size, size, scope)
    return {"Certificates": {"Certificate": [describe.list_entry(service, r)
                                             for r in records]},
            "PageNumber": number, "PageSize": size, "TotalCount": total}


async def update_status_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    await _service(services).set_status(values["CertificateId"], values["Status"])
    return {}


async def delete_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    await _service(services).delete(values["CertificateId"])
    return {}


async def sign_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    signature = await crypto.sign(
        _service(services), values["CertificateId"], values["Algorithm"],
        values["Message"], values.get("MessageType", crypto.RAW),
        values.get("AllowOutsideValidity", False))
    return {"CertificateId": values["CertificateId"], "SignatureValue": signature}


async def verify_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    valid = await crypto.verify(
        _service(services), values["CertificateId"], values["Algorithm"],
        values["Message"], values.get("MessageType", crypto.RAW),
        values["SignatureValue"])
    return {"CertificateId": values["CertificateId"], "SignatureValid": valid}


async def encrypt_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    ciphertext = await crypto.encrypt(_service(services), values["CertificateId"],
                                      values["Algorithm"], values["Plaintext"])
    return {"CertificateId": values["CertificateId"], "CiphertextBlob": ciphertext}


async def decrypt_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    plaintext = await crypto.decrypt(_service(services), values["CertificateId"],
                                     values["Algorithm"], values["CiphertextBlob"])
    return {"CertificateId": values["CertificateId"], "Plaintext": plaintext}


async def export_op(services: Any, ctx: RequestContext, values: dict) -> dict:
    exported = await crypto.export(_service(services), values["CertificateId"],
                                   values["ExportFormat"], values.get("Passphrase"))
    return {"CertificateId": values["CertificateId"], **exported}


def _op(name: str, handler, group: str, *params: Param) -> Operation:
    return Operation(name, handler, params, permission=f"kms:{name}", group=group)


SIGN_ALGORITHM = Param("Algorithm", required=True, choices=(
    asymmetric.RSA_PKCS1_SHA_256, asymmetric.RSA_PSS_SHA_256,
    asymmetric.ECDSA_SHA_256, asymmetric.SM2DSA))
ENCRYPT_ALGORITHM = Param("Algorithm", required=True, choices=(
    asymmetric.RSAES_OAEP_SHA_256, asymmetric.RSAES_OAEP_SHA_1, asymmetric.SM2PKE))
MESSAGE = (Param("Message", BYTES, required=True, low=1,
                 high=crypto.MAX_RAW_MESSAGE_BYTES),
           Param("MessageType", choices=crypto.MESSAGE_TYPES))
NEW_PAIR = (Param("ExportablePrivateKey", BOOL),
            Param("Tags", LIST, high=MAX_TAGS_PER_RESOURCE),
            Param("DKMSInstanceId", high=64))

OPERATIONS = [
    _op("CreateCertificate", create_op, CREATE,
        Param("KeySpec", required=True, choices=KEY_SPECS),
        Param("Subject", required=True, low=1, high=1024),
        Param("SubjectAlternativeNames", LIST), *NEW_PAIR),
    _op("ImportCertificate", import_op, CREATE,
        Param("PKCS12Blob", BYTES, required=True, low=1, high=MAX_CHAIN_CHARS),
        Param("Passphrase", high=1024), *NEW_PAIR),
    _op("UploadCertificate", upload_op, WRITE, CERTIFICATE_ID,
        Param("Certificate", required=True, low=1, high=MAX_PEM_CHARS),
        Param("CertificateChain", high=MAX_CHAIN_CHARS)),
    _op("GetCertificate", get_op, READ, CERTIFICATE_ID),
    _op("DescribeCertificate", describe_op, READ, CERTIFICATE_ID),
    _op("ListCertificates", list_op, READ, PAGE_NUMBER, PAGE_SIZE),
    _op("UpdateCertificateStatus", update_status_op, WRITE, CERTIFICATE_ID,
        Param("Status", required=True, choices=STATUSES)),
    _op("DeleteCertificate", delete_op, WRITE, CERTIFICATE_ID),
    _op("CertificatePrivateKeySign", sign_op, CRYPTO, CERTIFICATE_ID, SIGN_ALGORITHM,
        *MESSAGE, Param("AllowOutsideValidity", BOOL)),
    _op("CertificatePublicKeyVerify", verify_op, CRYPTO, CERTIFICATE_ID,
        SIGN_ALGORITHM, *MESSAGE,
        Param("SignatureValue", BYTES, required=True, low=1, high=MAX_SIGNATURE_BYTES)),
    _op("CertificatePublicKeyEncrypt", encrypt_op, CRYPTO, CERTIFICATE_ID,
        ENCRYPT_ALGORITHM, Param("Plaintext", PLAINTEXT, required=True, low=1,
                                 high=sm2.MAX_PLAINTEXT_BYTES)),
    _op("CertificatePrivateKeyDecrypt", decrypt_op, CRYPTO, CERTIFICATE_ID,
        ENCRYPT_ALGORITHM, Param("CiphertextBlob", BYTES, required=True, low=1,
                                 high=sm2.MAX_CIPHERTEXT_BYTES)),
    # A write: its audit record is on disk before the private key leaves.
    _op("ExportCertificate", export_op, WRITE, CERTIFICATE_ID,
        Param("ExportFormat", required=True, choices=bundle.EXPORT_FORMATS),
        Param("Passphrase", low=1, high=1024)),
]
