"""Fixtures of the web-interface tests: the cloud services as processes, a headless Chromium.

The services (user manager, cloud task manager, cloud gateway) run as ``python -m`` processes
on the real broker, once for the session; the browser is Debian's Chromium driven through
Selenium and chromedriver (``scripts/bootstrap.sh`` installs both).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import CLIENT_TOKEN, OPERATOR_TOKEN, free_port, isolated_environ

from experiments.processes import ProcessGroup
from experiments.stack import Api

CHROMIUM = os.environ.get("AGATA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AGATA_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)

SERVER_PY = """\
import argparse
import time

from task_daemon_lib import TaskReporter

reporter = TaskReporter()
parser = argparse.ArgumentParser()
parser.add_argument("--rounds", type=int, default={rounds})
parser.add_argument("--pause", type=float, default={pause})
args, _ = parser.parse_known_args()
for task_round in range(1, args.rounds + 1):
    time.sleep(args.pause)
    reporter.send_stats(task_round, loss=1.0 / task_round, accuracy=0.15 * task_round)
time.sleep(0.3)
reporter.send_info("Finished")
"""


@dataclass
class WebStack:
    """The cloud services behind a real gateway, and API helpers for both audiences."""

    url: str
    api: Api
    client_api: Api
    files_dir: Path

    def task_files(self, rounds: int = 5, pause: float = 0.8) -> list[Path]:
        """A server.py reporting ``rounds`` rounds of metrics (``--rounds``/``--pause`` change
        that), and a tiny client.py."""
        folder = self.files_dir / f"files-{rounds}-{pause}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "server.py").write_text(SERVER_PY.format(rounds=rounds, pause=pause))
        (folder / "client.py").write_text("print('client')\n")
        return [folder / "server.py", folder / "client.py"]

    def create_task(self, task_id: str, rounds: int = 3, pause: float = 0.2,
                    **fields: Any) -> dict[str, Any]:
        """A task with its files, through the API."""
        task = self.api.post("/api/tasks", {"task_id": task_id, "port": free_port(), **fields})
        self.api.upload_files(task_id, self.task_files(rounds, pause))
        return task


@contextlib.contextmanager
def running_stack(tmp: Path) -> Iterator[WebStack]:
    """``python -m user_manager``, ``cloud_task_manager`` and ``cloud_gateway``, ready."""
    environ = {**os.environ, **isolated_environ(tmp)}
    url = f"http://127.0.0.1:{environ['AGATA_SERVER_GATEWAY_PORT']}"
    processes = ProcessGroup(environ, tmp / "logs")
    for module in ("user_manager", "cloud_task_manager", "cloud_gateway"):
        processes.start(module, module)
    api = Api(url, OPERATOR_TOKEN)
    try:
        api.wait_ready(60)
    except Exception:
        processes.stop_all()
        logs = {p.name: p.read_text()[-1500:] for p in (tmp / "logs").glob("*.log")}
        raise RuntimeError(f"the cloud services did not come up: {logs}") from None
    try:
        yield WebStack(url, api, Api(url, CLIENT_TOKEN), tmp / "files")
    finally:
        processes.stop_all()


@pytest.fixture(scope="session")
def web_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebStack]:
    """The services shared by the session's browser tests."""
    with running_stack(tmp_path_factory.mktemp("web_stack")) as stack:
        yield stack


@pytest.fixture(scope="module")
def fresh_web_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebStack]:
    """Services of one test module only (nothing other tests created)."""
    with running_stack(tmp_path_factory.mktemp("fresh_web_stack")) as stack:
        yield stack


def _find(executable: str) -> str | None:
    if os.path.isfile(executable) and os.access(executable, os.X_OK):
        return executable
    return shutil.which(Path(executable).name)


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium through chromedriver (skipped, saying why, when either is missing)."""
    chromium, chromedriver = _find(CHROMIUM), _find(CHROMEDRIVER)
    missing = [name for name, found in (("chromium", chromium), ("chromedriver", chromedriver))
               if found is None]
    if missing:
        reason = (f"browser tests skipped: {' and '.join(missing)} not found "
                  f"(looked for {CHROMIUM} and {CHROMEDRIVER}); scripts/bootstrap.sh installs "
                  "Debian's chromium and chromium-driver")
        print(reason)
        pytest.skip(reason)
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is missing: pip install -e '.[dev]'")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium_profile")
    options = Options()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=chromedriver,
                      log_output=str(profile.parent / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_script_timeout(15)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class Ui:
    """The web interface in the browser, with waits that fail with a useful message."""

    def __init__(self, driver: Any, stack: WebStack) -> None:
        self.driver = driver
        self.stack = stack

    def open(self, page: str) -> None:
        """Load ``/ui/<page>`` and wait until the page says it is ready (sign-in shown, or
        its handlers attached and first data drawn)."""
        self.driver.get(f"{self.stack.url}/ui/{page}")
        self.wait(lambda: self.js("return document.documentElement.dataset.ready || ''"),
                  "the page to say it is ready")

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for: {what}\n"
                                     f"URL {self.driver.current_url}\n"
                                     f"page text: {self.text('body')[:1500]}\n"
                                     f"console: {self.console()}")
            time.sleep(0.05)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.js("const e = document.querySelector(arguments[0]); "
                       "return e ? e.innerText : ''", css) or ""

    def visible(self, css: str) -> bool:
        return bool(self.js(
            "const e = document.querySelector(arguments[0]);"
            "return !!e && !e.closest('[hidden]') && e.getClientRects().length > 0", css))

    def console(self) -> list[str]:
        try:
            return [entry["message"] for entry in self.driver.get_log("browser")]
        except Exception:
            return []

    def sign_out_storage(self) -> None:
        """Forget the token of this tab (as a new tab would)."""
        self.driver.get(f"{self.stack.url}/ui/favicon.svg")
        self.js("window.sessionStorage.clear()")

    def sign_in(self, token: str = OPERATOR_TOKEN) -> None:
        """Sign in on the current page's form and wait for the page content."""
        self.wait(lambda: self.visible("#api-token"), "the sign-in form")
        field = self.find("#api-token")
        field.clear()
        field.send_keys(token)
        self.find("#signin-form button[type=submit]").click()

    def signed_in(self, page: str = "index.html") -> None:
        """Open ``page`` with a signed-in session."""
        self.open(page)
        if self.visible("#api-token"):
            self.sign_in()
        self.wait(lambda: self.visible("#content"), f"the content of {page}")

    def field_error(self, field_id: str) -> str:
        """The error shown next to a field (empty when none is shown)."""
        return self.js(
            "const input = document.getElementById(arguments[0]);"
            "const error = document.getElementById(arguments[0] + '-error');"
            "if (!input || !error || error.hidden) return '';"
            "return error.innerText", field_id) or ""

    def no_alert(self) -> None:
        """No window.alert/confirm is open (errors belong next to their fields)."""
        from selenium.common.exceptions import NoAlertPresentException

        try:
            alert = self.driver.switch_to.alert
        except NoAlertPresentException:
            return
        text = alert.text
        alert.dismiss()
        raise AssertionError(f"an alert box was shown: {text}")


def _ui(browser: Any, stack: WebStack) -> Iterator[Ui]:
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.set_window_size(1280, 900)
    helper = Ui(browser, stack)
    yield helper
    helper.no_alert()
    browser.get_log("browser")  # drop this test's console lines


@pytest.fixture
def ui(browser: Any, web_stack: WebStack) -> Iterator[Ui]:
    """The interface on the shared services, in a default-sized window."""
    yield from _ui(browser, web_stack)


@pytest.fixture
def fresh_ui(browser: Any, fresh_web_stack: WebStack) -> Iterator[Ui]:
    """The interface on services of this test module only."""
    yield from _ui(browser, fresh_web_stack)
