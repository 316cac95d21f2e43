"""Access control: who may call the agent and what each caller may do.

``principals`` matches a connection's peer credentials (and client key)
to a configured principal; ``policy`` contains the templates each
principal has on which resources; ``rules`` maps every operation to a template and
the resources it names; ``resource_policy`` parses key and secret
policies; ``client_keys`` issues and verifies client keys; ``control``
holds the configuration in force and reloads it; ``runtime`` builds it
for the daemon; ``stage`` authorizes each request; ``ops`` are the
operations of this package.
"""
