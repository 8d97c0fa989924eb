"""The contracts both sides share: messages, RPC declarations, common types, queue names.

A leaf package: it imports the standard library and pydantic only (the RPC declaration types
are its own, in ``agata_contracts.rpc``, which the transport consumes), so a device loads it
without loading the cloud or the broker client.
"""
