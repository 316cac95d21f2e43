"""The Secrets Manager: generic secrets sealed under Key Service keys.

``service.SecretService`` owns the rules, ``stages`` the version stage
rules, ``envelope`` the encryption of values, ``rotation`` the rotation
commands and jobs, ``watch`` the long-poll wake-ups and ``ops`` the
operation table.
"""
