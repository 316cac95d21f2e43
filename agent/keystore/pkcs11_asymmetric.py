"""Key pairs, HMAC keys and key import in a PKCS#11 token.

``Pkcs11AsymmetricMixin`` adds them to ``Pkcs11Keystore``. HSM material
uses the symmetric keys' format (wrap_format 1). The token generates the
private key (RSA_2048, RSA_3072, EC_P256, EC_P256K) or HMAC secret as a
session object and wraps it under the domain key with AES_KEY_WRAP_PAD.
The result is sealed and the object destroyed, so the token stores only
the domain key. A use unwraps it with an explicit template (SENSITIVE,
non-EXTRACTABLE, only SIGN, DECRYPT or UNWRAP) and caches the handle per
slot, like symmetric keys. SOFTWARE key pairs are PKCS#8 sealed under
the domain key (wrap_format 2); see ``software_asymmetric``.

SoftHSM2 2.6.1 quirks handled here: ECDSA runs on a digest with raw
r || s output (converted to DER); RSA-OAEP with SHA-256 is refused, so
that decryption runs raw RSA (CKM_RSA_X_509) in the token and removes
the padding in software; unwrapped secrets report CKA_VALUE_LEN 0, so
an imported key's length is checked from its wrapped length and AES-ECB.
RSA key generation (0.1 to 0.5 s on SoftHSM2 2.6.1 with 2 cores) and RSA
private-key operations run in worker threads. The rest runs inline.
"""

from __future__ import annotations

import pkcs11
from pkcs11 import DEFAULT, MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.constants import MechanismFlag
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from agent.keystore.asymmetric import (
    ECDSA_SHA_256, RSA_PKCS1_SHA_256, RSA_PSS_SHA_256, RSAES_OAEP_SHA_1,
    RSAES_PKCS1_V1_5, SHA256_DIGEST_INFO, SoftwareKeyPair, der_ecdsa_signature,
    generate_software_pair, oaep_decode, rsa_spki,
)
from agent.keystore.base import (
    ASYMMETRIC_SPECS, EC_CURVE_NAMES, HMAC_KEY_BYTES, HSM, RSA_KEY_BITS, SM2_SPEC,
    SOFTWARE, SYMMETRIC_KEY_BYTES, DecryptionFailed, InvalidImportedMaterial,
    KeyMaterial, Keystore,
)
from agent.keystore.key_transfer import hsm_export, hsm_import, pair_public_key
from agent.keystore.software_asymmetric import (
    WORKER, SoftwareMacKey, check_imported_length, check_sealed_software,
    key_check_value, software_material, software_pair_from, software_unwrap,
)

_MAC_MECHANISMS = {
    "HMAC_SHA_256": Mechanism.SHA256_HMAC,
    "HMAC_SHA_384": Mechanism.SHA384_HMAC,
    "HMAC_SHA_512": Mechanism.SHA512_HMAC,
}
# The mechanisms each HSM spec needs from the token.
_HSM_SPEC_MECHANISMS = {
    "RSA_2048": (Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS_PSS,
                 Mechanism.RSA_X_509),
    "RSA_3072": (Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS_PSS,
                 Mechanism.RSA_X_509),
    "EC_P256": (Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA),
    "EC_P256K": (Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA),
    **{spec: (Mechanism.GENERIC_SECRET_KEY_GEN, mechanism)
       for spec, mechanism in _MAC_MECHANISMS.items()},
}
# Specs of import wrapping keys; an EC_SM2 one is always SOFTWARE here.
_WRAPPING_SPECS = (*RSA_KEY_BITS, SM2_SPEC)
_PURPOSES = {
    "sign": MechanismFlag.SIGN,
    "decrypt": MechanismFlag.DECRYPT,
    "unwrap": MechanismFlag.UNWRAP | MechanismFlag.DECRYPT,
}
# python-pkcs11 sets every capability attribute it has a name for, and
# DEFAULT drops those a private key must not carry (SoftHSM2 raises
# AttributeTypeInvalid).
_PRIVATE_TEMPLATE = {
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.ENCRYPT: DEFAULT,
    Attribute.VERIFY: DEFAULT,
    Attribute.WRAP: DEFAULT,
}
_SESSION_PRIVATE = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True,
                    Attribute.TOKEN: False}
_WRAPPING_KEY_BYTES = 256


def _token():
    # The keystore module imports this one for its base class, so this
    # one reads the keystore's sealing helpers at call time.
    from agent.keystore import pkcs11 as token_keystore

    return token_keystore


def _kwp(slot, key) -> bytes:
    return slot.domain_key.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)


def _generate_pair(slot, version_id: str, key_spec: str) -> tuple[bytes, bytes]:
    session = slot.session
    capabilities = MechanismFlag.SIGN | MechanismFlag.VERIFY
    if key_spec in RSA_KEY_BITS:
        public, private = session.generate_keypair(
            KeyType.RSA, RSA_KEY_BITS[key_spec], store=False,
            capabilities=capabilities, public_template={Attribute.TOKEN: False},
            private_template=_SESSION_PRIVATE)
    else:
        parameters = session.create_domain_parameters(KeyType.EC, {
            Attribute.EC_PARAMS: encode_named_curve_parameters(
                EC_CURVE_NAMES[key_spec]),
        }, local=True)
        public, private = parameters.generate_keypair(
            store=False, capabilities=capabilities,
            public_template={Attribute.TOKEN: False}, private_template=_SESSION_PRIVATE)
    try:
        if key_spec in RSA_KEY_BITS:
            spki = rsa_spki(public[Attribute.MODULUS],
                            public[Attribute.PUBLIC_EXPONENT])
        else:
            spki = encode_ec_public_key(public)
        wrapped = _kwp(slot, private)
    finally:
        private.destroy()
        public.destroy()
    return _token()._seal(slot, version_id, wrapped), spki


def _private_key(slot, material: KeyMaterial, purpose: str):
    """Return a session copy of the private key of ``material`` for one use."""
    cache_key = f"{material.version_id}#{purpose}"
    key = slot.keys.get(cache_key)
    if key is not None:
        return key
    wrapped, domain_key = _token()._unseal(slot, material)
    key_type = KeyType.RSA if material.key_spec in RSA_KEY_BITS else KeyType.EC
    key = domain_key.unwrap_key(
        ObjectClass.PRIVATE_KEY, key_type, wrapped,
        mechanism=Mechanism.AES_KEY_WRAP_PAD, store=False,
        capabilities=_PURPOSES[purpose], template=_PRIVATE_TEMPLATE)
    if purpose != "unwrap":
        slot.keys[cache_key] = key
    return key


def _sign(slot, material: KeyMaterial, algorithm: str, digest: bytes) -> bytes:
    key = _private_key(slot, material, "sign")
    if algorithm == RSA_PSS_SHA_256:
        return key.sign(digest, mechanism=Mechanism.RSA_PKCS_PSS,
                        mechanism_param=(Mechanism.SHA256, MGF.SHA256, 32))
    if algorithm == RSA_PKCS1_SHA_256:
        return key.sign(SHA256_DIGEST_INFO + digest, mechanism=Mechanism.RSA_PKCS)
    if algorithm == ECDSA_SHA_256:
        return der_ecdsa_signature(key.sign(digest, mechanism=Mechanism.ECDSA))
    raise ValueError(f"{algorithm} is not an HSM sign algorithm")


def _rsa_decrypt(key, key_spec: str, algorithm: str, ciphertext: bytes) -> bytes:
    """Decrypt in the token; OAEP with SHA-256 is decoded in software.

    Raises:
        DecryptionFailed: for every failure, whatever the cause.
    """
    size = RSA_KEY_BITS[key_spec] // 8
    if len(ciphertext) != size:
        raise DecryptionFailed()
    try:
        if algorithm == RSAES_OAEP_SHA_1:
            return key.decrypt(ciphertext, mechanism=Mechanism.RSA_PKCS_OAEP,
                               mechanism_param=(Mechanism.SHA_1, MGF.SHA1, None))
        if algorithm == RSAES_PKCS1_V1_5:
            return key.decrypt(ciphertext, mechanism=Mechanism.RSA_PKCS)
        encoded = key.decrypt(ciphertext, mechanism=Mechanism.RSA_X_509)
    except pkcs11.PKCS11Error as error:
        if isinstance(error, _token()._UNAVAILABLE_ERRORS):
            raise
        raise DecryptionFailed() from None
    return oaep_decode(encoded.rjust(size, b"\0"), algorithm)


def _decrypt(slot, material: KeyMaterial, algorithm: str, ciphertext: bytes) -> bytes:
    key = _private_key(slot, material, "decrypt")
    return _rsa_decrypt(key, material.key_spec, algorithm, ciphertext)


def _generate_mac(slot, version_id: str, key_spec: str) -> bytes:
    key = slot.session.generate_key(
        KeyType.GENERIC_SECRET, HMAC_KEY_BYTES[key_spec] * 8,
        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
        template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True})
    try:
        wrapped = _kwp(slot, key)
    finally:
        key.destroy()
    return _token()._seal(slot, version_id, wrapped)


def _mac(slot, material: KeyMaterial, message: bytes) -> bytes:
    key = slot.keys.get(material.version_id)
    if key is None:
        wrapped, domain_key = _token()._unseal(slot, material)
        if len(wrapped) != _token()._kwp_length(HMAC_KEY_BYTES[material.key_spec]):
            raise DecryptionFailed()
        key = domain_key.unwrap_key(
            ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, wrapped,
            mechanism=Mechanism.AES_KEY_WRAP_PAD, store=False,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
        slot.keys[material.version_id] = key
    return key.sign(message, mechanism=_MAC_MECHANISMS[material.key_spec])


def _import(slot, version_id: str, key_spec: str, level: str, wrapping: KeyMaterial,
            algorithm: str, encrypted: bytes,
            check_block: bytes) -> tuple[KeyMaterial, bytes]:
    if len(encrypted) != _WRAPPING_KEY_BYTES:
        raise InvalidImportedMaterial()
    private = _private_key(slot, wrapping, "unwrap")
    try:
        if level == HSM:
            return _import_to_hsm(slot, private, version_id, key_spec, algorithm,
                                  encrypted, check_block)
        key = _unwrap_to_memory(private, algorithm, encrypted)
        check_imported_length(key_spec, key)
        fingerprint = key_check_value(key_spec, key, check_block)
        sealed = _token()._seal(slot, version_id, key)
        return software_material(version_id, key_spec, sealed), fingerprint
    finally:
        private.destroy()


def _unwrap_to_memory(private, algorithm: str, encrypted: bytes) -> bytes:
    try:
        return _rsa_decrypt(private, "RSA_2048", algorithm, encrypted)
    except DecryptionFailed:
        raise InvalidImportedMaterial() from None


def _import_to_hsm(slot, private, version_id: str, key_spec: str, algorithm: str,
                   encrypted: bytes, check_block: bytes) -> tuple[KeyMaterial, bytes]:
    # OAEP with SHA-1 and PKCS#1 v1.5 unwrap inside the token. SoftHSM2
    # lacks OAEP with SHA-256, so that key passes through process memory.
    key = _token_aes_key(slot, private, key_spec, algorithm, encrypted)
    try:
        wrapped = _kwp(slot, key)
        if len(wrapped) != _token()._kwp_length(SYMMETRIC_KEY_BYTES[key_spec]):
            raise InvalidImportedMaterial()
        # AES-ECB fails for any length but 16, 24 or 32 bytes.
        fingerprint = key.encrypt(check_block, mechanism=Mechanism.AES_ECB)
    except pkcs11.PKCS11Error as error:
        if isinstance(error, _token()._UNAVAILABLE_ERRORS):
            raise
        raise InvalidImportedMaterial() from None
    finally:
        key.destroy()
    sealed = _token()._seal(slot, version_id, wrapped)
    material = KeyMaterial(version_id, key_spec, HSM, _token().WRAPPED_KWP_GCM,
                           sealed)
    return material, fingerprint


def _token_aes_key(slot, private, key_spec: str, algorithm: str, encrypted: bytes):
    template = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True}
    capabilities = MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
    if algorithm not in (RSAES_OAEP_SHA_1, RSAES_PKCS1_V1_5):
        key = _unwrap_to_memory(private, algorithm, encrypted)
        check_imported_length(key_spec, key)
        return slot.session.create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
            Attribute.VALUE: key, Attribute.TOKEN: False, Attribute.PRIVATE: True,
            Attribute.ENCRYPT: True, Attribute.DECRYPT: True, **template})
    mechanism, parameter = ((Mechanism.RSA_PKCS_OAEP, (Mechanism.SHA_1, MGF.SHA1, None))
                            if algorithm == RSAES_OAEP_SHA_1
                            else (Mechanism.RSA_PKCS, None))
    try:
        return private.unwrap_key(
            ObjectClass.SECRET_KEY, KeyType.AES, encrypted, mechanism=mechanism,
            mechanism_param=parameter, store=False, capabilities=capabilities,
            template=template)
    except pkcs11.PKCS11Error as error:
        if isinstance(error, _token()._UNAVAILABLE_ERRORS):
            raise
        raise InvalidImportedMaterial() from None


def _is_hsm(material: KeyMaterial, families) -> bool:
    if material.protection_level == HSM:
        if (material.wrap_format != _token().WRAPPED_KWP_GCM
                or material.key_spec not in families):
            raise ValueError(
                f"key version {material.version_id} is not HSM material of spec "
                f"{material.key_spec}")
        return True
    check_sealed_software(material, families)
    return False


class Pkcs11AsymmetricMixin(Keystore):
    """Key pairs, HMAC keys and imports for ``Pkcs11Keystore``.

    Needs the keystore's ``_run``, ``_materials``, ``_token``,
    ``_hsm_available`` and ``_sm4_available``.
    """

    _hsm_mechanisms: frozenset | None = None

    def supports_spec(self, key_spec: str, protection_level: str) -> bool:
        if key_spec not in ASYMMETRIC_SPECS and key_spec not in HMAC_KEY_BYTES:
            return self.supports(key_spec, protection_level)
        if protection_level == SOFTWARE:
            return True
        if protection_level != HSM or not self._hsm_available:
            return False
        needed = _HSM_SPEC_MECHANISMS.get(key_spec)
        return needed is not None and set(needed) <= self._mechanisms()

    def _mechanisms(self) -> frozenset:
        if self._hsm_mechanisms is None:
            self._hsm_mechanisms = frozenset(self._token.slot.get_mechanisms())
        return self._hsm_mechanisms

    def _check_spec(self, key_spec: str, protection_level: str, family) -> None:
        if key_spec not in family or not self.supports_spec(key_spec, protection_level):
            raise ValueError(f"{key_spec} with {protection_level} is not supported")

    async def generate_key_pair(self, version_id: str, key_spec: str,
                                protection_level: str) -> KeyMaterial:
        self._check_spec(key_spec, protection_level, ASYMMETRIC_SPECS)
        size = WORKER if key_spec in RSA_KEY_BITS else 0
        if protection_level == HSM:
            sealed, spki = await self._run(size, _generate_pair, version_id, key_spec)
            return KeyMaterial(version_id, key_spec, HSM, _token().WRAPPED_KWP_GCM,
                               sealed, spki)
        sealed, spki = await self._run(size, _generate_sealed_pair, version_id,
                                       key_spec)
        return software_material(version_id, key_spec, sealed, spki)

    async def generate_mac_key(self, version_id: str, key_spec: str,
                               protection_level: str) -> KeyMaterial:
        self._check_spec(key_spec, protection_level, HMAC_KEY_BYTES)
        if protection_level == HSM:
            sealed = await self._run(0, _generate_mac, version_id, key_spec)
            return KeyMaterial(version_id, key_spec, HSM, _token().WRAPPED_KWP_GCM,
                               sealed)
        sealed = await self._run(0, _generate_sealed_secret, version_id, key_spec)
        return software_material(version_id, key_spec, sealed)

    async def sign(self, material: KeyMaterial, algorithm: str,
                   digest: bytes) -> bytes:
        size = WORKER if material.key_spec in RSA_KEY_BITS else 0
        if _is_hsm(material, ASYMMETRIC_SPECS):
            return await self._run(size, _sign, material, algorithm, digest)
        return await self._run(size, self._pair_sign, material, algorithm, digest)

    async def asymmetric_decrypt(self, material: KeyMaterial, algorithm: str,
                                 ciphertext: bytes) -> bytes:
        if _is_hsm(material, ASYMMETRIC_SPECS):
            return await self._run(WORKER, _decrypt, material, algorithm, ciphertext)
        return await self._run(WORKER, self._pair_decrypt, material, algorithm,
                               ciphertext)

    async def mac(self, material: KeyMaterial, message: bytes) -> bytes:
        if _is_hsm(material, HMAC_KEY_BYTES):
            return await self._run(len(message), _mac, material, message)
        return await self._run(len(message), self._secret_mac, material, message)

    async def import_material(self, version_id: str, key_spec: str,
                              protection_level: str, wrapping_key: KeyMaterial,
                              wrapping_algorithm: str, encrypted: bytes,
                              check_block: bytes) -> tuple[KeyMaterial, bytes]:
        if not self.supports(key_spec, protection_level):
            raise ValueError(f"{key_spec} with {protection_level} is not supported")
        if _is_hsm(wrapping_key, _WRAPPING_SPECS):
            return await self._run(WORKER, _import, version_id, key_spec,
                                   protection_level, wrapping_key, wrapping_algorithm,
                                   encrypted, check_block)
        return await self._run(WORKER, self._pair_import, version_id, key_spec,
                               protection_level, wrapping_key, wrapping_algorithm,
                               encrypted, check_block)

    async def import_key_pair(self, version_id: str, key_spec: str,
                              protection_level: str, pkcs8: bytes) -> KeyMaterial:
        self._check_spec(key_spec, protection_level, ASYMMETRIC_SPECS)
        spki = pair_public_key(key_spec, pkcs8)
        if protection_level == HSM:
            sealed = await self._run(WORKER, hsm_import, version_id, key_spec, pkcs8,
                                     _PRIVATE_TEMPLATE, _kwp, _token()._seal)
            return KeyMaterial(version_id, key_spec, HSM, _token().WRAPPED_KWP_GCM,
                               sealed, spki)
        sealed = await self._run(0, _token()._seal, version_id, pkcs8)
        return software_material(version_id, key_spec, sealed, spki)

    async def export_private_key(self, material: KeyMaterial) -> bytes:
        if _is_hsm(material, ASYMMETRIC_SPECS):
            return await self._run(WORKER, hsm_export, material, _PRIVATE_TEMPLATE,
                                   _token()._unseal)
        plain = await self._run(0, _token()._unseal, material)
        return plain[0]

    # --- SOFTWARE keys, sealed under the token's domain key ----------------

    def _pair_of(self, slot, material: KeyMaterial) -> SoftwareKeyPair:
        pair = self._materials.get(material.version_id)
        if pair is None:
            plain = _token()._unseal(slot, material)[0]
            pair = software_pair_from(material, plain)
            self._materials.put(material.version_id, pair)
        return pair

    def _pair_sign(self, slot, material: KeyMaterial, algorithm: str,
                       digest: bytes) -> bytes:
        return self._pair_of(slot, material).sign(algorithm, digest)

    def _pair_decrypt(self, slot, material: KeyMaterial, algorithm: str,
                          ciphertext: bytes) -> bytes:
        return self._pair_of(slot, material).decrypt(algorithm, ciphertext)

    def _secret_mac(self, slot, material: KeyMaterial, message: bytes) -> bytes:
        key = self._materials.get(material.version_id)
        if key is None:
            plain = _token()._unseal(slot, material)[0]
            key = SoftwareMacKey(material.key_spec, plain)
            self._materials.put(material.version_id, key)
        return key.mac(message)

    def _pair_import(self, slot, version_id: str, key_spec: str, level: str,
                         wrapping: KeyMaterial, algorithm: str, encrypted: bytes,
                         check_block: bytes) -> tuple[KeyMaterial, bytes]:
        if level == HSM:
            raise ValueError("HSM keys import with an HSM wrapping key only")
        key = software_unwrap(self._pair_of(slot, wrapping), algorithm, encrypted)
        check_imported_length(key_spec, key)
        fingerprint = key_check_value(key_spec, key, check_block)
        sealed = _token()._seal(slot, version_id, key)
        return software_material(version_id, key_spec, sealed), fingerprint


def _generate_sealed_pair(slot, version_id: str, key_spec: str) -> tuple[bytes, bytes]:
    pkcs8, spki = generate_software_pair(key_spec)
    return _token()._seal(slot, version_id, pkcs8), spki


def _generate_sealed_secret(slot, version_id: str, key_spec: str) -> bytes:
    secret = slot.session.generate_random(HMAC_KEY_BYTES[key_spec] * 8)
    return _token()._seal(slot, version_id, secret)
