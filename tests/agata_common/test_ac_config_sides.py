"""Settings per side, the shipped top-level config.ini, and renamed keys."""

import logging
from pathlib import Path

import pytest

from agata_common.config import (
    _ALL_SECTIONS,
    DEFAULT_CONFIG_PATH,
    CloudSettings,
    ConfigError,
    DeviceSettings,
    load_cloud_settings,
    load_device_settings,
    load_settings,
)

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
SHIPPED = REPO_ROOT / "config.ini"
MAX_KEYS = 45


def test_a_device_never_reads_the_clouds_sections() -> None:
    broken_cloud = {"AGATA_SERVER_GATEWAY_TLS_CERT": "/nowhere/cert.pem",
                    "AGATA_SERVER_GATEWAY_TLS_KEY": "/nowhere/key.pem",
                    "AGATA_CLOUD_TASK_MANAGER_WARM_HOSTS": "many"}
    device = load_device_settings(environ=broken_cloud)
    assert isinstance(device, DeviceSettings) and not isinstance(device, CloudSettings)
    assert not hasattr(device, "server_gateway")
    with pytest.raises(ConfigError, match="tls_cert"):
        load_cloud_settings(environ=broken_cloud)


def test_the_cloud_never_reads_the_devices_sections() -> None:
    broken_device = {"AGATA_CLIENT_PARAMS_NODE_CONFIG": "not a pair",
                     "AGATA_CLIENT_BROKER_PORT": "0"}
    cloud = load_cloud_settings(environ=broken_device)
    assert not hasattr(cloud, "client_params")
    with pytest.raises(ConfigError):
        load_device_settings(environ=broken_device)


def test_both_sides_together_are_each_side() -> None:
    both = load_settings(environ={})
    assert isinstance(both, CloudSettings) and isinstance(both, DeviceSettings)
    assert both.server_gateway == load_cloud_settings(environ={}).server_gateway
    assert both.client_params == load_device_settings(environ={}).client_params


def test_the_shipped_file_is_the_top_level_one_and_the_package_reads_it() -> None:
    assert DEFAULT_CONFIG_PATH.resolve() == SHIPPED.resolve()
    assert load_settings(environ={}).source == str(DEFAULT_CONFIG_PATH)


def shipped_keys() -> list[tuple[str, str, str]]:
    """(section, key, the line above it) for every key of the shipped file."""
    found, section, previous = [], "", ""
    for line in SHIPPED.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith(";"):
            found.append((section, line.partition("=")[0].strip(), previous))
        previous = line
    return found


def test_the_shipped_file_holds_few_known_keys_each_with_a_one_line_comment() -> None:
    keys = shipped_keys()
    assert 0 < len(keys) <= MAX_KEYS, len(keys)
    for section, key, above in keys:
        assert key in _ALL_SECTIONS[section].model_fields, (section, key)
        assert above.startswith("; ") and len(above) <= 100, (section, key, above)


def test_the_shipped_file_sets_no_secret_and_no_internal_knob() -> None:
    names = {(section, key) for section, key, _ in shipped_keys()}
    for internal in [("rpc", "handler_threads"), ("rpc", "prefetch"),
                     ("rpc", "reconnect_wait_s"), ("user_manager", "cache_ttl_s")]:
        assert internal not in names
    assert not any(key in {"api_token", "client_token", "join_token", "password",
                           "download_secret"} for _, key in names)


def test_internal_knobs_keep_their_defaults_and_are_still_overridable(tmp_path: Path) -> None:
    config = load_settings(environ={})
    assert (config.rpc.prefetch, config.rpc.reconnect_wait_s) == (32, 0.05)
    assert config.user_manager.cache_ttl_s == 2.0
    ini = tmp_path / "c.ini"
    ini.write_text("[rpc]\nprefetch = 4\n[user_manager]\ncache_ttl_s = 0\n")
    config = load_settings(ini, environ={"AGATA_RPC_HANDLER_THREADS": "3"})
    assert (config.rpc.prefetch, config.rpc.handler_threads) == (4, 3)
    assert config.user_manager.cache_ttl_s == 0


@pytest.mark.parametrize("where", ["file", "env"])
def test_the_old_heartbeat_key_still_works_with_a_deprecation_line(
        tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture) -> None:
    ini = tmp_path / "c.ini"
    ini.write_text("[client.params]\nheartbeat_s = 3\n" if where == "file" else "")
    environ = {"AGATA_CLIENT_PARAMS_HEARTBEAT_S": "3"} if where == "env" else {}
    with caplog.at_level(logging.WARNING, logger="agata_common.config"):
        device = load_device_settings(ini, environ=environ)
    assert device.client_params.cloud_heartbeat_s == 3.0
    assert "heartbeat_s" in caplog.text and "deprecated" in caplog.text
    assert "cloud_heartbeat_s" in caplog.text and "not a known key" not in caplog.text


def test_the_new_heartbeat_key_wins_over_the_old_one(tmp_path: Path) -> None:
    ini = tmp_path / "c.ini"
    ini.write_text("[client.params]\nheartbeat_s = 3\ncloud_heartbeat_s = 7\n")
    assert load_device_settings(ini, environ={}).client_params.cloud_heartbeat_s == 7.0
