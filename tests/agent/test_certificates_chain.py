"""Chain building and name constraints, on certificates from a test CA."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
from cryptography import x509

from agent.certificates import chain, constraints
from client import errors
from tests.agent.certificate_authority import DAY, Signer, make_certificate, name

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def ca_with(limits: x509.NameConstraints) -> tuple[x509.Certificate, Signer]:
    signer = Signer("ec")
    certificate = make_certificate(name("Constrained CA"), signer.spki(),
                                   name("Constrained CA"), signer, NOW - DAY,
                                   NOW + DAY, ca=True, constraints=limits)
    return certificate, signer


def leaf_with(issuer_signer: Signer, *sans, subject=None) -> x509.Certificate:
    signer = Signer("ec")
    return make_certificate(subject or name("leaf"), signer.spki(),
                            name("Constrained CA"), issuer_signer, NOW - DAY,
                            NOW + DAY, sans=sans)


def permitted(*subtrees) -> x509.NameConstraints:
    return x509.NameConstraints(permitted_subtrees=list(subtrees),
                                excluded_subtrees=None)


def excluded(*subtrees) -> x509.NameConstraints:
    return x509.NameConstraints(permitted_subtrees=None,
                                excluded_subtrees=list(subtrees))


@pytest.mark.parametrize("limits,name_value,ok", [
    (permitted(x509.DNSName("example.com")), x509.DNSName("example.com"), True),
    (permitted(x509.DNSName("example.com")), x509.DNSName("a.b.example.com"), True),
    (permitted(x509.DNSName("example.com")), x509.DNSName("badexample.com"), False),
    (permitted(x509.DNSName(".example.com")), x509.DNSName("example.com"), False),
    (permitted(x509.DNSName(".example.com")), x509.DNSName("a.example.com"), True),
    (excluded(x509.DNSName("secret.example.com")),
     x509.DNSName("*.example.com"), False),
    (excluded(x509.DNSName("secret.example.com")),
     x509.DNSName("public.example.com"), True),
    (permitted(x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))),
     x509.IPAddress(ipaddress.ip_address("10.1.2.3")), True),
    (permitted(x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))),
     x509.IPAddress(ipaddress.ip_address("192.0.2.1")), False),
    (permitted(x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))),
     x509.IPAddress(ipaddress.ip_address("::1")), False),
    (permitted(x509.RFC822Name("example.com")),
     x509.RFC822Name("ops@example.com"), True),
    (permitted(x509.RFC822Name("ops@example.com")),
     x509.RFC822Name("dev@example.com"), False),
    (permitted(x509.RFC822Name(".example.com")),
     x509.RFC822Name("ops@mail.example.com"), True),
    (excluded(x509.UniformResourceIdentifier("example.com")),
     x509.UniformResourceIdentifier("https://other.test/"), False),
])
def test_name_constraint_cases(limits, name_value, ok):
    """Each subtree type permits and excludes as RFC 5280 describes."""
    ca, signer = ca_with(limits)
    leaf = leaf_with(signer, name_value)
    problem = constraints.violation(ca, [leaf])
    assert (problem is None) == ok


def test_directory_name_constraint():
    """A directoryName subtree constrains the subject by its leading RDNs."""
    base = x509.Name([x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "CN")])
    ca, signer = ca_with(permitted(x509.DirectoryName(base)))
    inside = leaf_with(signer, subject=name("leaf"))
    outside = leaf_with(signer, subject=x509.Name([
        x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(x509.NameOID.COMMON_NAME, "leaf")]))
    assert constraints.violation(ca, [inside]) is None
    assert "CN=leaf,C=US" in constraints.violation(ca, [outside])


def test_no_constraints_no_violation():
    """A CA without NameConstraints constrains nothing."""
    signer = Signer("ec")
    ca = make_certificate(name("Free CA"), signer.spki(), name("Free CA"), signer,
                          NOW - DAY, NOW + DAY, ca=True)
    assert constraints.violation(ca, [leaf_with(signer, x509.DNSName("a.b"))]) is None


def test_path_length_enforced():
    """A root with path length 0 may not sign an intermediate that signs a leaf."""
    root_signer, middle_signer = Signer("ec"), Signer("ec")
    root = make_certificate(name("Root"), root_signer.spki(), name("Root"),
                            root_signer, NOW - DAY, NOW + DAY, ca=True, path_length=0)
    middle = make_certificate(name("Middle"), middle_signer.spki(), name("Root"),
                              root_signer, NOW - DAY, NOW + DAY, ca=True)
    leaf = make_certificate(name("leaf"), Signer("ec").spki(), name("Middle"),
                            middle_signer, NOW - DAY, NOW + DAY)
    with pytest.raises(errors.CertificateChainInvalidError) as caught:
        chain.build_path(leaf, [root, middle])
    assert "CN=Root" in caught.value.message


def test_self_signed_leaf_alone():
    """A self-signed certificate is its own complete path."""
    signer = Signer("rsa")
    leaf = make_certificate(name("Self"), signer.spki(), name("Self"), signer,
                            NOW - DAY, NOW + DAY, ca=True)
    assert chain.build_path(leaf, []) == [leaf]


def test_validity_names_first_problem():
    """validity reports the first certificate outside its period, leaf first."""
    signer = Signer("ec")
    leaf = make_certificate(name("leaf"), signer.spki(), name("leaf"), signer,
                            NOW, NOW + DAY)
    assert chain.validity([leaf], NOW + DAY / 2) == (chain.VALID, None)
    status, message = chain.validity([leaf], NOW + 2 * DAY)
    assert status == chain.EXPIRED
    assert "CN=leaf" in message
    assert chain.validity([leaf], NOW - DAY)[0] == chain.NOT_YET_VALID
