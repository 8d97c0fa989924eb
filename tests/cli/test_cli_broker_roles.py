"""The broker locked for a deployment (``agata_cli.broker_roles``): its rules, and its accounts
made on the machine's RabbitMQ under names of the test's own (removed afterwards; guest and
the ``/`` virtual host are never touched)."""

from __future__ import annotations

import base64
import hashlib
import re
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika.exceptions
import pytest
from broker_support import connect, drop_roles, refused

from agata_cli.broker_roles import (
    BrokerAdminError,
    BrokerRole,
    lock_broker,
    manual_commands,
    password_hash,
    stack_name,
)
from agata_cli.local_deployment import LocalDeployment
from microservice_interconnect.settings import BrokerSettings

EVENTS = "agata.events"


def deployment(tmp_path: Path, prefix: str = "agata.", devices: int = 2) -> LocalDeployment:
    return LocalDeployment(data_dir=tmp_path, port=9001, api_token="t" * 32, devices=devices,
                           prefix=prefix, locked_broker=True)


@pytest.mark.unit
def test_password_hash_is_rabbitmqs_salted_sha256() -> None:
    salt = b"\x01\x02\x03\x04"
    expected = base64.b64encode(salt + hashlib.sha256(salt + b"pass").digest()).decode()
    assert password_hash("pass", salt) == expected
    assert password_hash("pass") != password_hash("pass")  # a fresh salt each time


@pytest.mark.unit
def test_each_role_may_touch_its_own_names_only(tmp_path: Path) -> None:
    cloud, device = deployment(tmp_path).broker_roles()[:2]
    configure, write, read = cloud.permissions(EVENTS)
    for name in ("agata.cloud.rpc_exec_create_task", "amq.gen-Xy1", EVENTS):
        assert re.fullmatch(configure, name) and re.fullmatch(read, name)
    assert re.fullmatch(write, "amq.default") and not re.fullmatch(configure, "amq.default")
    assert re.fullmatch(read, "amq.rabbitmq.reply-to")
    for foreign in ("agata.device-0.outbox", "other.cloud.x", "agataXcloud.x", "amq.direct"):
        assert not any(re.fullmatch(p, foreign) for p in (configure, write, read)), foreign
    assert not re.fullmatch(device.permissions(EVENTS)[2], "agata.cloud.rpc_exec_create_task")


@pytest.mark.unit
def test_every_side_has_its_own_virtual_host_user_and_password_file(tmp_path: Path) -> None:
    local = deployment(tmp_path)
    roles = local.broker_roles()
    assert [(r.user, r.virtual_host) for r in roles] == [
        ("agata-cloud", "agata"), ("agata-device-0", "agata.device-0"),
        ("agata-device-1", "agata.device-1")]
    assert len({r.password_file for r in roles}) == 3
    cloud, device = local.cloud_environ(), local.device_environ(1)
    assert cloud["AGATA_SERVER_BROKER_USERNAME"] == "agata-cloud"
    assert cloud["AGATA_SERVER_BROKER_PASSWORD_FILE"] == str(tmp_path / "cloud" / "secrets"
                                                             / "broker_password")
    assert device["AGATA_CLIENT_BROKER_VIRTUAL_HOST"] == "agata.device-1"
    assert "AGATA_SERVER_BROKER_USERNAME" not in device
    assert not any(key.endswith("_PASSWORD") for key in {**cloud, **device})
    unlocked = LocalDeployment(data_dir=tmp_path, port=9001, api_token="t" * 32, devices=1)
    assert not any("USERNAME" in key for key in unlocked.device_environ(0))


@pytest.mark.unit
@pytest.mark.parametrize("prefix", ["", ".", "a b.", "x/y."])
def test_a_prefix_that_cannot_name_a_virtual_host_is_refused(prefix: str) -> None:
    with pytest.raises(BrokerAdminError, match="cannot name a virtual host"):
        stack_name(prefix)


@pytest.mark.unit
def test_manual_commands_read_passwords_from_their_files(tmp_path: Path) -> None:
    role = deployment(tmp_path).cloud_role()
    commands = "\n".join(manual_commands([role], EVENTS))
    assert f"rabbitmqctl add_user agata-cloud < {role.password_file}" in commands
    assert "rabbitmqctl set_permissions -p agata agata-cloud '^(agata\\.cloud\\." in commands


@pytest.fixture
def roles(tmp_path: Path) -> Iterator[list[BrokerRole]]:
    made = deployment(tmp_path, f"lock-{uuid.uuid4().hex[:8]}.", devices=1).broker_roles()
    try:
        yield made
    finally:
        drop_roles(made)


def password(role: BrokerRole) -> str:
    return role.password_file.read_text().strip()


def test_locking_makes_the_roles_and_keeps_everyone_else_out(roles: list[BrokerRole]) -> None:
    cloud, device = roles
    assert lock_broker(BrokerSettings(), roles, EVENTS) is True
    for role in roles:
        assert stat.S_IMODE(role.password_file.stat().st_mode) == 0o600
        assert len(password(role)) >= 32
    # the second time the accounts work: nothing to administer (a failing command is not run)
    assert lock_broker(BrokerSettings(), roles, EVENTS, rabbitmqctl=["false"]) is False

    for virtual_host in (cloud.virtual_host, device.virtual_host):
        assert refused("guest", "guest", virtual_host)
        assert refused(f"nobody-{uuid.uuid4().hex[:6]}", "guessed", virtual_host)
    assert refused(device.user, password(device), cloud.virtual_host)  # no cloud queue for it
    assert refused(cloud.user, password(cloud), device.virtual_host)

    connection = connect(cloud.user, password(cloud), cloud.virtual_host)
    try:
        channel = connection.channel()
        own = channel.queue_declare(f"{cloud.prefix}rpc_probe", auto_delete=True).method.queue
        channel.basic_consume(own, lambda *_: None)
        channel.basic_consume("amq.rabbitmq.reply-to", lambda *_: None, auto_ack=True)
        channel.basic_publish("", own, b"{}", pika.BasicProperties(
            reply_to="amq.rabbitmq.reply-to"))
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as foreign:
            connection.channel().queue_declare(f"{device.prefix}outbox", durable=True)
        assert foreign.value.reply_code == 403
    finally:
        connection.close()

    # guest let in on the virtual host by someone is put out again
    subprocess.run(["rabbitmqctl", "--quiet", "set_permissions", "-p", cloud.virtual_host,
                    "guest", ".*", ".*", ".*"], check=True, capture_output=True, timeout=120)
    assert not refused("guest", "guest", cloud.virtual_host)
    assert lock_broker(BrokerSettings(), roles, EVENTS) is True
    assert refused("guest", "guest", cloud.virtual_host)


def test_a_broker_that_cannot_be_administered_is_a_clear_error(tmp_path: Path) -> None:
    roles = deployment(tmp_path, f"manual-{uuid.uuid4().hex[:8]}.", devices=1).broker_roles()
    with pytest.raises(BrokerAdminError) as error:
        lock_broker(BrokerSettings(), roles, EVENTS, rabbitmqctl=[])
    message = str(error.value)
    assert "cannot be administered from here" in message
    for role in roles:
        assert f"rabbitmqctl add_user {role.user} < {role.password_file}" in message
        assert password(role) not in message
