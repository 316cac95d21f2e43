"""Key pairs into and out of a keystore, as PKCS#8 DER.

ImportCertificate brings a private key from a PKCS#12 file, and
ExportCertificate hands an exportable certificate key back out. Both
pass the key as unencrypted PKCS#8 DER, which the caller keeps only for
one request. The certificate service, not the keystore, decides whether
a key may be exported.

In a PKCS#11 token the private key of an HSM version is in the clear
only inside the token. Export unwraps the sealed key as an extractable
session object, wraps it again under a one-time AES key that the agent
made (AES_KEY_WRAP_PAD), and removes that wrapping in software with RFC
5649. Import runs the same path the other way, then seals the key under
the domain key like a generated one. SoftHSM2 2.6.1 zero-pads the
wrapped PKCS#8 to a multiple of 8 bytes, so export cuts the DER to the
length its header encodes.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.constants import MechanismFlag

from agent.keystore import sm2
from agent.keystore.base import EC_CURVE_NAMES, RSA_KEY_BITS, SM2_SPEC, KeyMaterial

_TRANSPORT_KEY_BYTES = 32
_CURVES = {"EC_P256": ec.SECP256R1, "EC_P256K": ec.SECP256K1}


def pair_public_key(key_spec: str, pkcs8: bytes) -> bytes:
    """Return the SubjectPublicKeyInfo DER of a PKCS#8 private key.

    Raises:
        ValueError: the bytes are not a private key of ``key_spec``.
    """
    if key_spec == SM2_SPEC:
        return sm2.Sm2PrivateKey(pkcs8).public_key_der()
    try:
        key = serialization.load_der_private_key(pkcs8, None)
    except (ValueError, TypeError):
        raise ValueError(f"the private key is not {key_spec} PKCS#8 DER") from None
    if key_spec in RSA_KEY_BITS:
        valid = (isinstance(key, rsa.RSAPrivateKey)
                 and key.key_size == RSA_KEY_BITS[key_spec])
    else:
        valid = (key_spec in EC_CURVE_NAMES
                 and isinstance(key, ec.EllipticCurvePrivateKey)
                 and isinstance(key.curve, _CURVES[key_spec]))
    if not valid:
        raise ValueError(f"the private key does not match {key_spec}")
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def der_length(encoded: bytes) -> int:
    """Return the length of the DER element at the start of ``encoded``.

    Raises:
        ValueError: the header is truncated or longer than the input.
    """
    if len(encoded) < 2:
        raise ValueError("the DER element is truncated")
    first = encoded[1]
    if first < 0x80:
        total = 2 + first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(encoded) < 2 + count:
            raise ValueError("the DER length is invalid")
        total = 2 + count + int.from_bytes(encoded[2:2 + count], "big")
    if total > len(encoded):
        raise ValueError("the DER element is longer than its input")
    return total


def _key_type(key_spec: str) -> KeyType:
    return KeyType.RSA if key_spec in RSA_KEY_BITS else KeyType.EC


def _transport_key(slot, value: bytes):
    # A session AES key whose value the agent has; it exists for one call.
    return slot.session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
        Attribute.VALUE: value, Attribute.TOKEN: False, Attribute.PRIVATE: True,
        Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
    })


def hsm_import(slot, version_id: str, key_spec: str, pkcs8: bytes,
               private_template: dict, wrap_under_domain, seal) -> bytes:
    """Move a PKCS#8 private key into the token and seal it; worker side.

    ``private_template`` is the keystore's template for unwrapped private
    keys, ``wrap_under_domain(slot, key)`` wraps with the domain key, and
    ``seal(slot, version_id, wrapped)`` seals the result.
    """
    transport_value = os.urandom(_TRANSPORT_KEY_BYTES)
    transport = _transport_key(slot, transport_value)
    try:
        private = transport.unwrap_key(
            ObjectClass.PRIVATE_KEY, _key_type(key_spec),
            keywrap.aes_key_wrap_with_padding(transport_value, pkcs8),
            mechanism=Mechanism.AES_KEY_WRAP_PAD, store=False,
            capabilities=MechanismFlag.SIGN,
            template={**private_template, Attribute.EXTRACTABLE: True})
        try:
            wrapped = wrap_under_domain(slot, private)
        finally:
            private.destroy()
    finally:
        transport.destroy()
    return seal(slot, version_id, wrapped)


def hsm_export(slot, material: KeyMaterial, private_template: dict,
               unseal) -> bytes:
    """Return the PKCS#8 DER of an HSM private key; worker side.

    ``unseal(slot, material)`` returns the domain-wrapped key and the
    domain key that wrapped it.
    """
    wrapped, domain_key = unseal(slot, material)
    private = domain_key.unwrap_key(
        ObjectClass.PRIVATE_KEY, _key_type(material.key_spec), wrapped,
        mechanism=Mechanism.AES_KEY_WRAP_PAD, store=False,
        capabilities=MechanismFlag.SIGN,
        template={**private_template, Attribute.EXTRACTABLE: True})
    transport_value = os.urandom(_TRANSPORT_KEY_BYTES)
    try:
        transport = _transport_key(slot, transport_value)
        try:
            rewrapped = transport.wrap_key(private,
                                           mechanism=Mechanism.AES_KEY_WRAP_PAD)
        finally:
            transport.destroy()
    finally:
        private.destroy()
    padded = keywrap.aes_key_unwrap_with_padding(transport_value, rewrapped)
    return padded[:der_length(padded)]
