"""Access control: who may call the agent and what each caller may do.

``principals`` matches a connection's peer credentials (and client key)
to a configured principal. ``policy`` contains the templates each
principal has on which resources, and ``rules`` maps every operation to
a template and the resources it names. ``resource_policy`` parses key
and secret policies, ``client_keys`` issues and verifies client keys,
``control`` keeps the configuration in force and reloads it, and
``runtime`` builds it for the daemon. ``stage`` authorizes each request,
and ``ops`` are the operations of this package.
"""
