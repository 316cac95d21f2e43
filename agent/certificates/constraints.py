"""Name constraints of CA certificates (RFC 5280, section 4.2.1.10).

A CA's NameConstraints apply to every certificate below it in the path.
The names checked are the subject alternative names, the subject as a
directory name (skipped for a self-issued intermediate, as RFC 5280
requires), and e-mail addresses in the subject. For each name type the
permitted subtrees mention, every name of that type must fall in one of
them. No name may fall in an excluded subtree. Supported types: DNS
names, e-mail addresses, IP addresses and directory names.

A constraint of another type (URI, other names) against a certificate
that has a name of that type is a violation, since it cannot be checked.
A wildcard DNS name is treated as every name it could match, so it
violates an excluded subtree inside its domain.
"""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.x509.oid import NameOID

_CHECKED = (x509.DNSName, x509.RFC822Name, x509.IPAddress, x509.DirectoryName)


def violation(issuer: x509.Certificate,
              below: list[x509.Certificate]) -> str | None:
    """Return why a certificate below ``issuer`` breaks its name constraints.

    ``below`` is the part of the path under ``issuer``, leaf first.
    Returns None when the issuer has no constraints or all names comply.
    """
    try:
        limits = issuer.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    for position, certificate in enumerate(below):
        self_issued = certificate.subject == certificate.issuer
        for name in _names(certificate, subject=position == 0 or not self_issued):
            problem = _check_name(name, limits)
            if problem is not None:
                return (f"The name {_text(name)!r} of "
                        f"{certificate.subject.rfc4514_string()!r} {problem} of "
                        f"the CA {issuer.subject.rfc4514_string()!r}.")
    return None


def _names(certificate: x509.Certificate, subject: bool) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    if subject and len(certificate.subject) > 0:
        names.append(x509.DirectoryName(certificate.subject))
        for attribute in certificate.subject.get_attributes_for_oid(
                NameOID.EMAIL_ADDRESS):
            names.append(x509.RFC822Name(str(attribute.value)))
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return names
    return names + list(extension.value)


def _check_name(name: x509.GeneralName, limits: x509.NameConstraints) -> str | None:
    for subtree in limits.excluded_subtrees or ():
        if _same_type(name, subtree) and _within(name, subtree, excluded=True):
            return "is in an excluded subtree"
    permitted = [s for s in limits.permitted_subtrees or () if _same_type(name, s)]
    if permitted and not any(_within(name, s, excluded=False) for s in permitted):
        return "is outside the permitted subtrees"
    return None


def _same_type(name: x509.GeneralName, subtree: x509.GeneralName) -> bool:
    # IPv4 and IPv6 are one type: an IPv6 address is outside IPv4 subtrees.
    return type(name) is type(subtree)


def _within(name: x509.GeneralName, subtree: x509.GeneralName, excluded: bool) -> bool:
    if not isinstance(name, _CHECKED):
        # An unchecked type cannot be shown to comply: exclude, never permit.
        return excluded
    if isinstance(name, x509.DNSName):
        return _dns_within(name.value.lower(), subtree.value.lower(), excluded)
    if isinstance(name, x509.RFC822Name):
        return _email_within(name.value.lower(), subtree.value.lower())
    if isinstance(name, x509.IPAddress):
        return _ip_within(name.value, subtree.value)
    return _directory_within(name.value, subtree.value)


def _dns_within(name: str, base: str, excluded: bool) -> bool:
    if base.startswith("."):
        inside = name.endswith(base)
    else:
        inside = name == base or name.endswith("." + base)
    if inside or not (excluded and name.startswith("*.")):
        return inside
    # *.example.com could be x.example.com, so it meets an excluded x.example.com.
    domain = name[2:]
    return base.lstrip(".").endswith("." + domain)


def _email_within(address: str, base: str) -> bool:
    host = address.rpartition("@")[2]
    if "@" in base:
        return address == base
    if base.startswith("."):
        return host.endswith(base)
    return host == base


def _ip_within(address, network) -> bool:
    if address.version != network.version:
        return False
    if isinstance(address, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return address.subnet_of(network)
    return address in network


def _directory_within(name: x509.Name, base: x509.Name) -> bool:
    return name.rdns[:len(base.rdns)] == base.rdns


def _text(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DirectoryName):
        return name.value.rfc4514_string()
    return str(name.value)
