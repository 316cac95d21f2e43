"""Subjects and subject alternative names of certificate requests.

A subject is RFC 4514 (RFC 2253) text such as ``CN=app,OU=web,O=Example,
C=CN``. CN, C, O and OU are required, ST and L are optional, and no
other attribute is accepted; C is a two-letter ISO 3166 code, and CN and
C appear once each. A subject alternative name is a DNS name (optionally
``*.`` for a wildcard) or an IP address, at most 10 of them.
"""

from __future__ import annotations

import ipaddress
import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from client.errors import InvalidParameterError

MAX_SUBJECT_ALTERNATIVE_NAMES = 10
REQUIRED_ATTRIBUTES = ("CN", "C", "O", "OU")
# Short names and upper length bounds (RFC 5280, appendix A.1).
_ATTRIBUTES = {
    NameOID.COMMON_NAME: ("CN", 64),
    NameOID.COUNTRY_NAME: ("C", 2),
    NameOID.ORGANIZATION_NAME: ("O", 64),
    NameOID.ORGANIZATIONAL_UNIT_NAME: ("OU", 64),
    NameOID.STATE_OR_PROVINCE_NAME: ("ST", 128),
    NameOID.LOCALITY_NAME: ("L", 128),
}
_SINGLE = ("CN", "C")
_MAX_DNS_NAME_CHARS = 253
_DNS_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"(\*\.)?({_DNS_LABEL}\.)*{_DNS_LABEL}", re.IGNORECASE)


def parse_subject(text: str) -> x509.Name:
    """Parse and check a Subject parameter.

    Raises:
        InvalidParameterError: the text is not a distinguished name, has
            an attribute other than CN, C, O, OU, ST and L, lacks a
            required one, or has a value of the wrong length.
    """
    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        raise InvalidParameterError(
            f"Subject {text!r} is not a distinguished name in RFC 4514 form, such "
            f"as CN=app,OU=web,O=Example,C=CN: {exc}") from None
    seen: list[str] = []
    for rdn in name.rdns:
        if len(rdn) != 1:
            raise InvalidParameterError(
                f"Subject {text!r} has a multi-valued RDN; separate attributes "
                "with commas.")
        seen.append(_check_attribute(text, next(iter(rdn))))
    missing = [short for short in REQUIRED_ATTRIBUTES if short not in seen]
    if missing:
        raise InvalidParameterError(
            f"Subject {text!r} lacks {', '.join(missing)}; CN, C, O and OU are "
            "required.")
    for short in _SINGLE:
        if seen.count(short) > 1:
            raise InvalidParameterError(f"Subject {text!r} has {short} twice.")
    return name


def _check_attribute(text: str, attribute: x509.NameAttribute) -> str:
    known = _ATTRIBUTES.get(attribute.oid)
    if known is None:
        raise InvalidParameterError(
            f"Subject {text!r} has the attribute {attribute.rfc4514_string()!r}; "
            "only CN, C, O, OU, ST and L are allowed.")
    short, limit = known
    value = attribute.value
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise InvalidParameterError(
            f"Subject {text!r}: {short} must be 1 to {limit} characters long.")
    return short


def parse_alternative_names(values: list) -> list[x509.GeneralName]:
    """Parse the SubjectAlternativeNames list into DNS names and IP addresses.

    Raises:
        InvalidParameterError: more than 10 names, a duplicate, or an
            entry that is neither a DNS name nor an IP address.
    """
    if len(values) > MAX_SUBJECT_ALTERNATIVE_NAMES:
        raise InvalidParameterError(
            f"SubjectAlternativeNames has {len(values)} names; at most "
            f"{MAX_SUBJECT_ALTERNATIVE_NAMES} are allowed.")
    names: list[x509.GeneralName] = []
    for value in values:
        name = _alternative_name(value)
        if name in names:
            raise InvalidParameterError(
                f"SubjectAlternativeNames lists {value!r} twice.")
        names.append(name)
    return names


def _alternative_name(value: object) -> x509.GeneralName:
    if not isinstance(value, str):
        raise InvalidParameterError(
            "SubjectAlternativeNames must be a list of strings.")
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if len(value) > _MAX_DNS_NAME_CHARS or not _DNS_NAME.fullmatch(value):
        raise InvalidParameterError(
            f"SubjectAlternativeNames entry {value!r} is not a DNS name (ASCII "
            "labels, optionally starting with *.) or an IP address.")
    return x509.DNSName(value.lower())


def alternative_name_text(name: x509.GeneralName) -> str:
    """Return a subject alternative name as the text the API shows."""
    if isinstance(name, x509.DirectoryName):
        return name.value.rfc4514_string()
    if isinstance(name, x509.OtherName):
        return name.type_id.dotted_string
    return str(name.value)
