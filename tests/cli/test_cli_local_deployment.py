"""The local deployment's environments: secrets only as 0600 files, each where it is needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from agata_cli.local_deployment import LocalDeployment, secret_files_for, split_by_side
from agata_cli.supervisor import Supervisor
from agata_common.config_loader import secret_env_names

pytestmark = pytest.mark.unit

TOKEN = "operator-" * 5


def values(environ: dict[str, str]) -> str:
    return "\n".join(environ.values())


def test_only_the_cloud_gateway_learns_where_the_operator_token_is(tmp_path: Path) -> None:
    deployment = LocalDeployment(data_dir=tmp_path, port=9009, api_token=TOKEN, devices=1)
    services = deployment.cloud_services() + deployment.device_services(0, "join-" * 8)
    for service in services:
        environ = dict(service.environ)
        assert TOKEN not in values(environ) and "join-join-" not in values(environ)
        assert not set(environ) & secret_env_names(), service.name
        assert ("AGATA_SERVER_GATEWAY_API_TOKEN_FILE" in environ) == (
            service.name == "cloud_gateway"), service.name
        assert ("AGATA_CLIENT_PARAMS_JOIN_TOKEN_FILE" in environ) == (
            service.name == "device-0.client_gateway"), service.name
    token_file = tmp_path / "cloud" / "secrets" / "api_token"
    join_file = tmp_path / "device-0" / "secrets" / "join_token"
    for path, value in [(token_file, TOKEN), (join_file, "join-" * 8)]:
        assert path.read_text().strip() == value
        assert path.stat().st_mode & 0o777 == 0o600


def test_a_device_that_joined_gets_no_join_token_and_its_old_file_goes(tmp_path: Path) -> None:
    deployment = LocalDeployment(data_dir=tmp_path, port=9009, api_token=TOKEN, devices=1)
    deployment.device_services(0, "join-" * 8)
    services = deployment.device_services(0, None)
    assert not any("AGATA_CLIENT_PARAMS_JOIN_TOKEN_FILE" in s.environ for s in services)
    assert not (tmp_path / "device-0" / "secrets" / "join_token").exists()


def test_secrets_given_as_values_reach_each_side_as_its_own_files(tmp_path: Path) -> None:
    given = {"AGATA_SERVER_BROKER_PASSWORD": "cloud-password",
             "AGATA_CLIENT_BROKER_PASSWORD": "device-password"}
    cloud, device = split_by_side(given)
    assert cloud == {"AGATA_SERVER_BROKER_PASSWORD": "cloud-password"}
    assert device == {"AGATA_CLIENT_BROKER_PASSWORD": "device-password"}
    deployment = LocalDeployment(data_dir=tmp_path, port=9009, api_token=TOKEN, devices=1,
                                 secrets=given)
    cloud_env, device_env = deployment.cloud_environ(), deployment.device_environ(0)
    assert "-password" not in values(cloud_env) + values(device_env)
    assert "AGATA_CLIENT_BROKER_PASSWORD_FILE" not in cloud_env
    assert "AGATA_SERVER_BROKER_PASSWORD_FILE" not in device_env
    assert Path(cloud_env["AGATA_SERVER_BROKER_PASSWORD_FILE"]).read_text().strip() == (
        "cloud-password")
    device_file = Path(device_env["AGATA_CLIENT_BROKER_PASSWORD_FILE"])
    assert device_file.is_relative_to(tmp_path / "device-0")
    assert device_file.stat().st_mode & 0o777 == 0o600
    assert secret_files_for({"AGATA_SERVER_BROKER_PASSWORD": ""}, tmp_path) == {}


def test_the_supervisor_passes_no_secret_value_on(tmp_path: Path) -> None:
    supervisor = Supervisor([], tmp_path / "logs", tmp_path / "state.json", base_environ={
        "AGATA_SERVER_GATEWAY_API_TOKEN": TOKEN, "AGATA_SERVER_BROKER_PASSWORD": "pw",
        "AGATA_SERVER_GATEWAY_API_TOKEN_FILE": "/path", "HOME": "/home/x"})
    assert supervisor.base_environ == {"AGATA_SERVER_GATEWAY_API_TOKEN_FILE": "/path",
                                       "HOME": "/home/x"}
