"""The agent's in-memory caches and their statistics.

``values.ValueCache`` keeps decrypted secret values for the Secrets
Manager. ``data_keys.DataKeyCache`` lets GenerateDataKey reuse a data
key when the caller allows it. ``ops`` reports both through the
agent-specific operation DescribeAgentCache. Each cache is bounded in
entries and bytes, and ``bounded.BoundedLRU`` counts what it evicts.
"""
