"""Configuration loading: the ini file, ``AGATA_*`` overrides, ``AGATA_CONFIG`` and errors."""

import logging
from pathlib import Path

import pytest

from agata_common.config import DEFAULT_CONFIG_PATH, ConfigError, env_name, load_settings

pytestmark = pytest.mark.unit


def write_ini(tmp_path: Path, text: str, name: str = "other.ini") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load_from_the_repository_file():
    config = load_settings(environ={})
    assert config.source == str(DEFAULT_CONFIG_PATH)
    assert config.server_broker.host == "localhost"
    assert config.server_broker.port == 5672
    assert config.server_broker.queue_prefix == ""
    assert config.client_broker.queue_prefix == "client."
    assert config.server_broker.heartbeat_s == 30
    assert config.rpc.timeout_s == 10.0
    assert config.rpc.handler_threads == 8
    assert config.events.register_events is False
    assert config.events.exchange == "agata.events"
    assert config.client_params.request_interval == 10.0
    assert config.client_params.max_parallel_tasks == 2
    assert config.server_gateway.access_log is False


def test_model_defaults_apply_when_the_file_lacks_a_section(tmp_path):
    path = write_ini(tmp_path, "[rpc]\ntimeout_s = 3\n")
    config = load_settings(environ={"AGATA_CONFIG": str(path)})
    assert config.rpc.timeout_s == 3.0
    assert config.rpc.prefetch == 32
    assert config.server_broker.port == 5672
    assert config.events.register_events is False


def test_env_name_maps_dots_and_case():
    assert env_name("server.broker", "port") == "AGATA_SERVER_BROKER_PORT"
    assert env_name("client.params", "request_interval") == "AGATA_CLIENT_PARAMS_REQUEST_INTERVAL"
    assert env_name("rpc", "timeout_s") == "AGATA_RPC_TIMEOUT_S"


def test_env_overrides_every_type():
    config = load_settings(environ={
        "AGATA_SERVER_BROKER_PORT": "5673",  # int, dotted section
        "AGATA_CLIENT_PARAMS_REQUEST_INTERVAL": "2.5",  # float, dotted section
        "AGATA_EVENTS_REGISTER_EVENTS": "true",  # bool
        "AGATA_SERVER_BROKER_HOST": "rabbit.example",  # str
        "AGATA_CLIENT_BROKER_QUEUE_PREFIX": "dev.",
        "AGATA_RPC_TIMEOUT_S": "0.25",
        "AGATA_CLOUD_TASK_MANAGER_MAX_FILES_PER_TASK": "7",  # underscores in the section
    })
    assert config.server_broker.port == 5673
    assert isinstance(config.server_broker.port, int)
    assert config.client_params.request_interval == 2.5
    assert config.events.register_events is True
    assert config.server_broker.host == "rabbit.example"
    assert config.client_broker.queue_prefix == "dev."
    assert config.rpc.timeout_s == 0.25
    assert config.cloud_task_manager.max_files_per_task == 7
    # the other broker section is untouched
    assert config.client_broker.port == 5672
    assert config.client_broker.host == "localhost"


@pytest.mark.parametrize(("raw", "expected"), [
    ("true", True), ("1", True), ("yes", True), ("on", True),
    ("false", False), ("0", False), ("no", False), ("off", False),
])
def test_bool_spellings(raw, expected):
    config = load_settings(environ={"AGATA_EVENTS_REGISTER_EVENTS": raw})
    assert config.events.register_events is expected


def test_empty_env_value_overrides_a_string():
    config = load_settings(environ={"AGATA_CLIENT_BROKER_QUEUE_PREFIX": ""})
    assert config.client_broker.queue_prefix == ""


def test_agata_config_selects_another_file_and_env_still_wins(tmp_path):
    path = write_ini(tmp_path, (
        "[server.broker]\nhost = elsewhere\nport = 1234\n\n"
        "[client.params]\nrequest_interval = 0.5\npolicy = all\n"
    ))
    config = load_settings(environ={"AGATA_CONFIG": str(path)})
    assert config.source == str(path)
    assert config.server_broker.host == "elsewhere"
    assert config.server_broker.port == 1234
    assert config.client_params.request_interval == 0.5
    assert config.client_params.policy == "all"

    config = load_settings(environ={"AGATA_CONFIG": str(path), "AGATA_SERVER_BROKER_PORT": "99"})
    assert config.server_broker.port == 99
    assert config.server_broker.host == "elsewhere"


def test_explicit_path_argument(tmp_path):
    path = write_ini(tmp_path, "[rpc]\nhandler_threads = 3\n")
    assert load_settings(path, environ={}).rpc.handler_threads == 3


def test_missing_agata_config_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.ini"
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"AGATA_CONFIG": str(missing)})
    assert str(missing) in str(caught.value)
    assert "AGATA_CONFIG" in str(caught.value)


def test_agata_config_naming_a_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"AGATA_CONFIG": str(tmp_path)})
    assert str(tmp_path) in str(caught.value)


@pytest.mark.parametrize("value", ["abc", "70000", "0", "-1", "1.5"])
def test_bad_port_from_env_names_section_key_and_variable(value):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"AGATA_SERVER_BROKER_PORT": value})
    message = str(caught.value)
    assert "[server.broker]" in message
    assert "port" in message
    assert "AGATA_SERVER_BROKER_PORT" in message


def test_bad_value_in_a_dotted_section_names_its_variable():
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"AGATA_CLIENT_PARAMS_REQUEST_INTERVAL": "soon"})
    message = str(caught.value)
    assert "[client.params]" in message
    assert "request_interval" in message
    assert "AGATA_CLIENT_PARAMS_REQUEST_INTERVAL" in message


def test_bad_bool_and_float_are_errors():
    with pytest.raises(ConfigError, match="AGATA_EVENTS_REGISTER_EVENTS"):
        load_settings(environ={"AGATA_EVENTS_REGISTER_EVENTS": "maybe"})
    with pytest.raises(ConfigError, match="AGATA_RPC_TIMEOUT_S"):
        load_settings(environ={"AGATA_RPC_TIMEOUT_S": "0"})


def test_bad_value_in_the_file_names_the_file_and_key(tmp_path):
    path = write_ini(tmp_path, "[server.broker]\nport = seventy\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"AGATA_CONFIG": str(path)})
    message = str(caught.value)
    assert str(path) in message
    assert "[server.broker]" in message
    assert "port" in message
    assert "AGATA_SERVER_BROKER_PORT" in message


def test_unknown_key_is_ignored_with_a_warning(tmp_path, caplog):
    path = write_ini(tmp_path, "[server.broker]\nport = 5680\ncolour = blue\n")
    with caplog.at_level(logging.WARNING, logger="agata_common.config"):
        config = load_settings(environ={"AGATA_CONFIG": str(path)})
    assert config.server_broker.port == 5680
    assert not hasattr(config.server_broker, "colour")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("colour" in w and "server.broker" in w for w in warnings), warnings


def test_unknown_section_is_ignored(tmp_path):
    path = write_ini(tmp_path, "[nobody.uses.this]\nx = 1\n\n[rpc]\nprefetch = 5\n")
    assert load_settings(environ={"AGATA_CONFIG": str(path)}).rpc.prefetch == 5


@pytest.mark.parametrize("text", [
    "port = 5672\n",  # no section header
    "[rpc]\ntimeout_s = 1\n[rpc]\ntimeout_s = 2\n",  # duplicate section
    "[rpc]\ntimeout_s = 1\ntimeout_s = 2\n",  # duplicate key
    "[rpc\ntimeout_s = 1\n",  # broken header
])
def test_malformed_ini_is_a_config_error(tmp_path, text):
    path = write_ini(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"AGATA_CONFIG": str(path)})
    assert str(path) in str(caught.value)


def test_non_utf8_file_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.ini"
    path.write_bytes(b"[server.broker]\nhost = caf\xe9\n")
    with pytest.raises(ConfigError):
        load_settings(environ={"AGATA_CONFIG": str(path)})


def test_settings_are_frozen():
    config = load_settings(environ={})
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError
        config.server_broker.port = 1  # type: ignore[misc]


def test_node_config_reads_flower_style_pairs_with_typed_values():
    config = load_settings(environ={"AGATA_CLIENT_PARAMS_NODE_CONFIG":
                                    'site="lab a" batch-size=32 lr=0.5 gpu=false tag=plain'})
    assert config.client_params.node_config_values() == {
        "site": "lab a", "batch-size": 32, "lr": 0.5, "gpu": False, "tag": "plain"}
    assert load_settings(environ={}).client_params.node_config_values() == {}


@pytest.mark.parametrize("value", ["novalue", "=3", "bad key=1", 'open="quote', "x=[1,2]"])
def test_a_bad_node_config_names_its_variable(value):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"AGATA_CLIENT_PARAMS_NODE_CONFIG": value})
    assert "AGATA_CLIENT_PARAMS_NODE_CONFIG" in str(caught.value)


@pytest.mark.parametrize("variable", ["AGATA_SERVER_GATEWAY_API_TOKEN",
                                      "AGATA_SERVER_GATEWAY_CLIENT_TOKEN",
                                      "AGATA_CLIENT_PARAMS_CLIENT_TOKEN"])
def test_a_short_token_is_refused_naming_its_variable(variable):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={variable: "x" * 15})
    assert variable in str(caught.value) and "16 characters" in str(caught.value)
    assert load_settings(environ={variable: ""}) is not None


def test_the_operator_and_device_tokens_must_differ():
    same = "s" * 32
    with pytest.raises(ConfigError, match="must differ"):
        load_settings(environ={"AGATA_SERVER_GATEWAY_API_TOKEN": same,
                               "AGATA_SERVER_GATEWAY_CLIENT_TOKEN": same})


def test_trusted_proxies_are_addresses_or_networks_and_a_bad_one_is_named():
    assert load_settings(environ={}).server_gateway.trusted_proxy_networks() == ()
    gateway = load_settings(environ={"AGATA_SERVER_GATEWAY_TRUSTED_PROXIES":
                                     "10.0.0.0/8, 192.168.1.7,::1"}).server_gateway
    assert [str(n) for n in gateway.trusted_proxy_networks()] == [
        "10.0.0.0/8", "192.168.1.7/32", "::1/128"]
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"AGATA_SERVER_GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8,proxy"})
    assert "AGATA_SERVER_GATEWAY_TRUSTED_PROXIES" in str(caught.value)
    assert "'proxy'" in str(caught.value)


def test_warm_preload_defaults_to_numpy_and_torch_and_is_set_per_side():
    defaults = load_settings(environ={})
    assert defaults.cloud_task_manager.preload_modules() == ("numpy", "torch")
    assert defaults.client_params.preload_modules() == ("numpy", "torch")
    chosen = load_settings(environ={"AGATA_CLOUD_TASK_MANAGER_WARM_PRELOAD": " numpy , pandas.io ",
                                    "AGATA_CLIENT_PARAMS_WARM_PRELOAD": ""})
    assert chosen.cloud_task_manager.preload_modules() == ("numpy", "pandas.io")
    assert chosen.client_params.preload_modules() == ()


@pytest.mark.parametrize("value", ["numpy;rm -rf /", "os,", "../x", "numpy torch"])
def test_a_warm_preload_that_is_not_module_names_is_refused(value):
    with pytest.raises(ConfigError, match="AGATA_CLIENT_PARAMS_WARM_PRELOAD"):
        load_settings(environ={"AGATA_CLIENT_PARAMS_WARM_PRELOAD": value})
