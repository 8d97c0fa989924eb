"""The contracts both sides share: messages, RPC declarations, common types, queue names.

A leaf package: it imports pydantic and the RPC declaration type of ``microservice_interconnect``,
nothing of any service, so a device loads it without loading the cloud.
"""
