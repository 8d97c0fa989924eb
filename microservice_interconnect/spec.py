"""The RPC declaration types the transport serves and calls, declared in the contracts' leaf
module ``agata_contracts.rpc`` (re-exported here for the code that imports them from the
transport)."""

from agata_contracts.rpc import Audience, Empty, RequestT, ResponseT, RpcSpec

__all__ = ["Audience", "Empty", "RequestT", "ResponseT", "RpcSpec"]
