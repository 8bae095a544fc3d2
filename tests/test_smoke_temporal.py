from temporalio.client import Client


async def test_dev_server_answers(temporal_client: Client) -> None:
    assert (await temporal_client.service_client.check_health()) is not None
