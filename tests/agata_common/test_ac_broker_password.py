"""A broker's ``password_file``: the password comes from a file only its owner may read."""

from pathlib import Path

import pytest

from agata_common.config import ConfigError, load_settings

pytestmark = pytest.mark.unit


def secret(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "broker_password"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_the_file_gives_the_password_and_beats_a_plain_one(tmp_path: Path) -> None:
    path = secret(tmp_path, "s3cret-from-a-file\n")
    config = load_settings(environ={"AGATA_SERVER_BROKER_PASSWORD_FILE": str(path),
                                    "AGATA_SERVER_BROKER_PASSWORD": "ignored"})
    assert config.server_broker.password == "s3cret-from-a-file"
    assert config.client_broker.password == "guest"


def test_a_file_others_may_read_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = secret(tmp_path, "s3cret", 0o644)
    with pytest.raises(ConfigError) as error:
        load_settings(environ={"AGATA_CLIENT_BROKER_PASSWORD_FILE": str(path)})
    assert "AGATA_CLIENT_BROKER_PASSWORD_FILE" in str(error.value)
    assert f"chmod 600 {path}" in str(error.value)
    assert "s3cret" not in str(error.value)


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: secret(p, "  \n")])
def test_a_missing_or_empty_file_is_an_error(tmp_path: Path, make) -> None:
    with pytest.raises(ConfigError, match="password_file"):
        load_settings(environ={"AGATA_SERVER_BROKER_PASSWORD_FILE": str(make(tmp_path))})
