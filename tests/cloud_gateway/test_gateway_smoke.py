"""A first pass through the gateway on real services."""

from support import Cloud, Gateway


async def test_update_and_get_user_through_gateway(gateway: Gateway, cloud: Cloud) -> None:
    status, body = await gateway.post(
        "/rpc_exec_update_user_info", {"user_id": "dev-1", "data_qnt": 40},
        headers=gateway.client())
    assert status == 200, body
    status, body = await gateway.post("/rpc_exec_get_user_info", {"user_id": "dev-1"},
                                      headers=gateway.operator())
    assert (status, body["data_qnt"]) == (200, 40)


def test_user_roundtrip_on_each_db(cloud_on_each_db: Cloud) -> None:
    from agata_contracts.users import GET_USER_INFO, UPDATE_USER_INFO
    client = cloud_on_each_db.client
    client.call(UPDATE_USER_INFO, {"user_id": "a", "sensors": ["camera"]})
    assert client.call(GET_USER_INFO, {"user_id": "a"}).sensors == ["camera"]
