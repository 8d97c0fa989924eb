"""Secrets read from 0600 files: the file form of every secret key, refusals, deprecations."""

import logging
from pathlib import Path

import pytest

from agata_common.config import ConfigError, load_cloud_settings, load_device_settings
from agata_common.config_loader import SECRET_KEYS, env_name
from agata_common.secret_files import SecretFileError, read_secret_file, write_secret_file

pytestmark = pytest.mark.unit

TOKEN = "t0ken-" * 6


def secret(tmp_path: Path, value: str = TOKEN, mode: int = 0o600, name: str = "s") -> Path:
    path = tmp_path / name
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def test_a_private_file_is_read_without_its_newline(tmp_path: Path) -> None:
    assert read_secret_file(str(secret(tmp_path))) == TOKEN


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_file_others_may_read_is_refused_saying_how_to_fix_it(tmp_path: Path,
                                                                mode: int) -> None:
    path = secret(tmp_path, mode=mode)
    with pytest.raises(SecretFileError) as caught:
        read_secret_file(str(path))
    assert f"{mode:04o}" in str(caught.value) and f"chmod 600 {path}" in str(caught.value)


def test_missing_empty_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match="cannot read"):
        read_secret_file(str(tmp_path / "absent"))
    with pytest.raises(SecretFileError, match="empty"):
        read_secret_file(str(secret(tmp_path, value="  ")))
    (tmp_path / "folder").mkdir(mode=0o700)
    with pytest.raises(SecretFileError):
        read_secret_file(str(tmp_path / "folder"))


def test_written_files_are_0600_and_replaced_whole(tmp_path: Path) -> None:
    path = write_secret_file(tmp_path / "secrets" / "one", "first")
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    write_secret_file(path, "second")
    assert read_secret_file(str(path)) == "second"
    assert [p.name for p in path.parent.iterdir()] == ["one"]


def test_every_secret_key_has_a_file_form() -> None:
    from agata_common.config import _ALL_SECTIONS

    for section, keys in SECRET_KEYS.items():
        for key in keys:
            assert f"{key}_file" in _ALL_SECTIONS[section].model_fields, (section, key)


def test_file_forms_fill_their_keys_on_each_side(tmp_path: Path) -> None:
    cloud = load_cloud_settings(environ={
        "AGATA_SERVER_GATEWAY_API_TOKEN_FILE": str(secret(tmp_path, name="api")),
        "AGATA_SERVER_BROKER_PASSWORD_FILE": str(secret(tmp_path, "cloud-pw", name="bp")),
        "AGATA_CLOUD_TASK_MANAGER_DOWNLOAD_SECRET_FILE": str(secret(tmp_path, "dl", name="d")),
    })
    assert cloud.server_gateway.api_token == TOKEN
    assert cloud.server_broker.password == "cloud-pw"
    assert cloud.cloud_task_manager.download_secret == "dl"
    device = load_device_settings(environ={
        "AGATA_CLIENT_PARAMS_JOIN_TOKEN_FILE": str(secret(tmp_path, "join-me", name="j")),
        "AGATA_CLIENT_BROKER_PASSWORD_FILE": str(secret(tmp_path, "device-pw", name="cp")),
    })
    assert device.client_params.join_token == "join-me"
    assert device.client_broker.password == "device-pw"


def test_the_file_form_in_the_ini_wins_over_the_value(tmp_path: Path) -> None:
    path = secret(tmp_path, "from-file")
    ini = tmp_path / "c.ini"
    ini.write_text(f"[server.broker]\npassword = inline\npassword_file = {path}\n")
    assert load_cloud_settings(ini, environ={}).server_broker.password == "from-file"


def test_a_readable_secret_file_is_a_config_error_naming_key_and_variable(
        tmp_path: Path) -> None:
    path = secret(tmp_path, mode=0o644)
    with pytest.raises(ConfigError) as caught:
        load_cloud_settings(environ={"AGATA_SERVER_GATEWAY_API_TOKEN_FILE": str(path)})
    message = str(caught.value)
    assert "[server.gateway] api_token_file" in message
    assert "AGATA_SERVER_GATEWAY_API_TOKEN_FILE" in message and "chmod 600" in message


def test_a_secret_in_the_environment_still_works_with_a_deprecation_line(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agata_common.config"):
        cloud = load_cloud_settings(environ={"AGATA_SERVER_GATEWAY_API_TOKEN": TOKEN})
    assert cloud.server_gateway.api_token == TOKEN
    lines = [r.getMessage() for r in caplog.records]
    assert any("AGATA_SERVER_GATEWAY_API_TOKEN puts a secret in the environment" in line
               and "AGATA_SERVER_GATEWAY_API_TOKEN_FILE" in line for line in lines), lines
    assert TOKEN not in caplog.text


def test_a_database_url_warns_only_when_it_holds_a_password(
        caplog: pytest.LogCaptureFixture) -> None:
    variable = env_name("user_manager", "database_url")
    with caplog.at_level(logging.WARNING, logger="agata_common.config"):
        load_cloud_settings(environ={variable: "postgresql+psycopg://agata@db/agata"})
    assert "secret" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="agata_common.config"):
        load_cloud_settings(environ={variable: "postgresql+psycopg://agata:pw@db/agata"})
    assert f"{variable} puts a secret" in caplog.text and ":pw@" not in caplog.text


def test_a_secret_written_in_a_config_file_others_may_read_is_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ini = tmp_path / "c.ini"
    ini.write_text(f"[server.gateway]\napi_token = {TOKEN}\n[server.broker]\npassword = guest\n")
    ini.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="agata_common.config"):
        assert load_cloud_settings(ini, environ={}).server_gateway.api_token == TOKEN
    assert "[server.gateway] api_token is written in" in caplog.text
    assert "api_token_file" in caplog.text and "password" not in caplog.text
    caplog.clear()
    ini.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="agata_common.config"):
        load_cloud_settings(ini, environ={})
    assert "is written in" not in caplog.text
