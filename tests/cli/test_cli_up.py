"""``agata up`` and ``agata status`` on real processes, and the supervisor's restart policy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from broker_support import drop_roles, refused
from support import free_port, wait_for

from agata_cli.client import EXIT_UNAVAILABLE
from agata_cli.local_deployment import LocalDeployment, Service
from agata_cli.supervisor import MAX_RESTARTS, Supervisor, backoff_s, write_state
from task_daemon_lib import confinement
from task_daemon_lib.confinement import Confinement, Mechanism

AGATA = [sys.executable, "-m", "agata_cli"]



def state(data_dir: Path) -> dict:
    try:
        return json.loads((data_dir / "up.json").read_text())
    except (OSError, ValueError):
        return {}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def status(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGATA, "status", "--data-dir", str(data_dir)], capture_output=True,
                          text=True, timeout=30)


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode(errors="replace").partition("=")[::2]
                for item in raw.split(b"\0") if item)


def assert_no_secret_in_any_environment(data_dir: Path, secrets: set[str]) -> None:
    """No service's environment (as /proc shows it) holds a secret's value; only the cloud
    gateway is told where the operator token is; secrets reach processes as 0600 files."""
    for service in state(data_dir)["services"]:
        environ = environ_of(service["pid"])
        text = "\n".join(f"{k}={v}" for k, v in environ.items())
        assert not any(secret in text for secret in secrets), service["name"]
        assert not any(name.startswith("AGATA_") and name.endswith(("_TOKEN", "_PASSWORD",
                                                                     "_SECRET"))
                       for name in environ), (service["name"], sorted(environ))
        has_operator_token = "AGATA_SERVER_GATEWAY_API_TOKEN_FILE" in environ
        assert has_operator_token == (service["name"] == "cloud_gateway"), service["name"]
        for name, value in environ.items():
            if name.startswith("AGATA_") and name.endswith("_FILE"):
                assert Path(value).stat().st_mode & 0o777 == 0o600, (name, value)
                if service["name"].startswith("device-"):
                    assert Path(value).is_relative_to(data_dir / "device-0"), (name, value)


def assert_broker_locked(data_dir: Path, prefix: str) -> None:
    """Every service uses its side's own broker user, reading the password from a 0600 file;
    guest, a stranger and a device cannot open the cloud's virtual host."""
    roles = LocalDeployment(data_dir=data_dir, port=1, api_token="", devices=1,
                            prefix=prefix).broker_roles()
    cloud, device = roles
    services = {s["name"]: s for s in state(data_dir)["services"]}
    gateway = environ_of(services["cloud_gateway"]["pid"])
    assert gateway["AGATA_SERVER_BROKER_USERNAME"] == cloud.user
    assert gateway["AGATA_SERVER_BROKER_VIRTUAL_HOST"] == cloud.virtual_host
    assert gateway["AGATA_SERVER_BROKER_PASSWORD_FILE"] == str(cloud.password_file)
    manager = environ_of(services["device-0.client_task_manager"]["pid"])
    assert manager["AGATA_CLIENT_BROKER_USERNAME"] == device.user
    assert manager["AGATA_CLIENT_BROKER_VIRTUAL_HOST"] == device.virtual_host
    for role in roles:
        assert role.password_file.stat().st_mode & 0o777 == 0o600
    assert not any(key.endswith("BROKER_PASSWORD") for key in {**gateway, **manager})
    assert refused("guest", "guest", cloud.virtual_host)
    assert refused("guest", "guest", device.virtual_host)
    assert refused(f"stranger-{uuid.uuid4().hex[:6]}", "guess", cloud.virtual_host)
    assert refused(device.user, device.password_file.read_text().strip(), cloud.virtual_host)


def test_up_runs_everything_restarts_a_crash_and_stops_without_leftovers(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert status(data_dir).returncode == 1
    # secrets given the deprecated way, in up's own environment: each side gets them as files
    shared_token, device_token = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
    ignored_token = uuid.uuid4().hex * 2  # up uses the operator token it keeps
    environ = {**os.environ, "AGATA_STORAGE_DATA_DIR": str(tmp_path / "unused"),
               "AGATA_SERVER_GATEWAY_API_TOKEN": ignored_token,
               "AGATA_SERVER_GATEWAY_CLIENT_TOKEN": shared_token,
               "AGATA_CLIENT_PARAMS_CLIENT_TOKEN": device_token}
    prefix = f"up-{uuid.uuid4().hex[:8]}."
    supervisor = subprocess.Popen(
        [*AGATA, "up", "--devices", "1", "--data-dir", str(data_dir), "--port",
         str(free_port()), "--queue-prefix", prefix],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started: list[int] = []
    try:
        def all_running() -> bool:
            services = state(data_dir).get("services", [])
            return len(services) == 5 and all(s["state"] == "running" for s in services)

        wait_for(all_running, 60, "every service running")
        shown = wait_for(lambda: (r := status(data_dir)).returncode == 0 and r.stdout, 30,
                         "agata status to say it is up")
        assert "device-0.client_task_manager" in shown and "running" in shown
        expected = "bwrap" if confinement.choose().mechanism is Mechanism.BWRAP else "NONE"
        wait_for(lambda: status(data_dir).stdout.count(expected) == 2, 30,
                 f"agata status to show both task managers' confinement ({expected})")
        token_file = data_dir / "secrets" / "api_token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        # no shared device token any more: each local device joined and keeps its own
        assert not (data_dir / "secrets" / "client_token").exists()
        credential = data_dir / "device-0" / "secrets" / "device_credential.json"
        wait_for(credential.exists, 60, "device-0 to join and keep its credential")
        assert credential.stat().st_mode & 0o777 == 0o600
        assert json.loads(credential.read_text())["client_id"] == "device-0"
        join_token = (data_dir / "device-0" / "secrets" / "join_token").read_text().strip()
        assert_no_secret_in_any_environment(data_dir, {token, join_token, shared_token,
                                                       device_token, ignored_token})
        assert_broker_locked(data_dir, prefix)

        victim = next(s for s in state(data_dir)["services"] if s["name"] == "cloud_gateway")
        started = [s["pid"] for s in state(data_dir)["services"]]
        os.kill(victim["pid"], signal.SIGKILL)

        def restarted() -> dict | None:
            now = next(s for s in state(data_dir)["services"] if s["name"] == "cloud_gateway")
            return now if now["restarts"] == 1 and now["state"] == "running" else None

        again = wait_for(restarted, 30, "the gateway restarted")
        assert again["pid"] != victim["pid"]
        started.append(again["pid"])
    finally:
        supervisor.send_signal(signal.SIGTERM)
        output, errors = supervisor.communicate(timeout=60)
        drop_roles(LocalDeployment(data_dir=data_dir, port=1, api_token="", devices=1,
                                   prefix=prefix).broker_roles())
    assert supervisor.returncode == 0, errors
    assert "broker locked" in output
    assert "agata stopped" in output
    for pid in started:
        assert wait_for(lambda p=pid: not alive(p), 10, f"pid {pid} gone")
    logs = "".join(p.read_text(errors="replace") for p in (data_dir / "logs").glob("*.log"))
    assert token not in logs + output + errors
    assert "restarting" in errors
    assert status(data_dir).returncode == 1


def test_status_shows_each_task_manager_s_confinement_loud_when_none(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    services = [{"name": "cloud_task_manager", "module": "cloud_task_manager", "state": "running",
                 "pid": os.getpid(), "data_dir": str(data_dir / "cloud")},
                {"name": "device-0.client_task_manager", "module": "client_task_manager",
                 "state": "running", "pid": os.getpid(), "data_dir": str(data_dir / "device-0")},
                {"name": "user_manager", "module": "user_manager", "state": "running",
                 "pid": os.getpid(), "data_dir": str(data_dir / "cloud")}]
    write_state(data_dir / "up.json", {"supervisor_pid": os.getpid(), "services": services,
                                       "url": "http://127.0.0.1:1"})
    confinement.record(data_dir / "cloud", Confinement(Mechanism.BWRAP, "for the test"))
    confinement.record(data_dir / "device-0", Confinement(Mechanism.NONE, "refused"))
    rows = {line.split()[0]: line for line in status(data_dir).stdout.splitlines()[2:]}
    assert rows["cloud_task_manager"].rstrip().endswith("bwrap")
    assert rows["device-0.client_task_manager"].rstrip().endswith("NONE (unconfined!)")
    assert rows["user_manager"].rstrip().endswith("-")
    shown = json.loads(subprocess.run([*AGATA, "status", "--json", "--data-dir", str(data_dir)],
                                      capture_output=True, text=True, timeout=30).stdout)
    assert [s.get("confinement", {}).get("mechanism") for s in shown["services"]] == [
        "bwrap", "none", None]


def test_up_refuses_a_taken_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run([*AGATA, "up", "--data-dir", str(tmp_path), "--port", str(port)],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"port {port} is taken" in result.stderr
    assert "Traceback" not in result.stderr


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert backoff_s(100) == 30.0


def test_a_service_that_keeps_dying_is_given_up(tmp_path: Path) -> None:
    # "python -m this" prints a poem and exits at once: a service that keeps dying
    supervisor = Supervisor([Service("flaky", "this", {})], tmp_path / "logs",
                            tmp_path / "state.json")
    supervisor.start()
    item = supervisor.watched[0]
    now = 0.0
    try:
        for _ in range(MAX_RESTARTS + 2):
            assert item.process is not None
            item.process.wait(10)
            supervisor.check(now=now)  # notices the exit: restarting, or given up
            if item.state != "restarting":
                break
            assert item.restart_at is not None
            now = item.restart_at
            supervisor.check(now=now)  # the back-off is over: started again
    finally:
        supervisor.stop()
    assert item.restarts == MAX_RESTARTS
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["services"][0]["restarts"] == MAX_RESTARTS


def test_up_says_what_to_run_when_it_cannot_administer_the_broker(tmp_path: Path) -> None:
    prefix = f"noadmin-{uuid.uuid4().hex[:8]}."
    result = subprocess.run(
        [*AGATA, "up", "--data-dir", str(tmp_path), "--port", str(free_port()),
         "--queue-prefix", prefix],
        env={**os.environ, "RABBITMQCTL": "false"}, capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    cloud = LocalDeployment(data_dir=tmp_path, port=1, api_token="", prefix=prefix).cloud_role()
    assert "the broker is not ready for AGATA" in result.stderr
    assert f"rabbitmqctl add_user {cloud.user} < {cloud.password_file}" in result.stderr
    assert "Traceback" not in result.stderr
    assert cloud.password_file.read_text().strip() not in result.stderr + result.stdout
