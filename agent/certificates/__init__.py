"""The Certificates Manager: certificates whose private keys stay in a keystore.

``service`` owns the lifecycle (create with a signed request, upload,
status, delete, import from PKCS#12), ``crypto`` signing, verification,
encryption and export, ``ops`` the operation table. Requests are built
in ``csr``, chains checked in ``chain`` and ``constraints``, and PKCS#12
and PEM files handled in ``bundle``.
"""
