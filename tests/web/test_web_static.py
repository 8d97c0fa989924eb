"""The gateway serves the web interface: public static pages under /ui/, nothing else, nothing
fetched from elsewhere, labelled inputs; the API routes around it are unchanged."""

from __future__ import annotations

import http.client
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer
from support import OPERATOR_TOKEN, REPO_ROOT

from cloud_gateway.wiring import create_app

WEB_DIR = REPO_ROOT / "cloud_web_interface"
PAGES = sorted(p.name for p in WEB_DIR.glob("*.html"))
SCRIPTS = sorted(p.relative_to(WEB_DIR).as_posix() for p in WEB_DIR.rglob("*.js"))
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def fetch(url: str, path: str, method: str = "GET",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One raw request (the path is sent exactly as given, no normalising)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


class PageParser(HTMLParser):
    """Collects what the checks need from one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.label_targets: set[str] = set()
        self.references: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.metas: list[dict[str, str | None]] = []
        self.headings: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag in {"input", "select", "textarea"} and attributes.get("type") != "hidden":
            self.controls.append(attributes)
        if tag == "label" and attributes.get("for"):
            self.label_targets.add(str(attributes["for"]))
        for name in ("src", "href", "action"):
            if attributes.get(name):
                self.references.append(str(attributes[name]))
        if tag == "script":
            self.scripts.append(attributes)
        if tag == "meta":
            self.metas.append(attributes)
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(tag)


def test_root_leads_to_the_interface_and_pages_are_public(web_stack):
    for path in ("/", "/ui"):
        status, headers, _ = fetch(web_stack.url, path)
        assert status == 302 and headers["Location"] == "/ui/", (path, status, headers)
    status, headers, body = fetch(web_stack.url, "/ui/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert body == (WEB_DIR / "index.html").read_bytes()
    for page in PAGES:
        status, headers, body = fetch(web_stack.url, f"/ui/{page}")
        assert status == 200 and headers["Content-Type"].startswith("text/html"), page
    for script in SCRIPTS:
        status, headers, _ = fetch(web_stack.url, f"/ui/{script}")
        assert status == 200, script
        assert "javascript" in headers["Content-Type"], (script, headers["Content-Type"])
    status, headers, _ = fetch(web_stack.url, "/ui/css/app.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")


def test_nothing_outside_the_interface_folder_is_served(web_stack):
    secret = (REPO_ROOT / "pyproject.toml").read_bytes()[:40]
    attempts = (
        "/ui/../pyproject.toml",
        "/ui/%2e%2e/pyproject.toml",
        "/ui/..%2fpyproject.toml",
        "/ui/%2e%2e%2fpyproject.toml",
        "/ui/css/../../pyproject.toml",
        "/ui/css/%2e%2e/%2e%2e/cloud_gateway/app.py",
        "/ui//etc/passwd",
        "/ui/%2fetc%2fpasswd",
        "/ui/..\\pyproject.toml",
    )
    for path in attempts:
        status, headers, body = fetch(web_stack.url, path)
        assert status in (400, 403, 404), (path, status)
        assert secret not in body and b"root:" not in body, path
    # No directory listings; a missing file is a plain 404.
    status, _, body = fetch(web_stack.url, "/ui/js/")
    assert status in (403, 404) and b"<a href" not in body
    status, _, _ = fetch(web_stack.url, "/ui/no-such-page.html")
    assert status == 404
    status, _, _ = fetch(web_stack.url, "/ui/index.html", method="POST")
    assert status in (404, 405)
    # the folder is a Python package too: only web file types are served from it
    for path in ("/ui/__init__.py", "/ui/__pycache__/__init__.cpython-311.pyc", "/ui/.hidden.js",
                 "/ui/js/../__init__.py"):
        status, _, body = fetch(web_stack.url, path)
        assert status == 404, (path, status)
    status, _, _ = fetch(web_stack.url, "/ui/index.html")
    assert status == 200


async def test_symlinks_leading_out_of_the_folder_are_not_followed(make_settings, tmp_path,
                                                                   monkeypatch):
    web_dir = tmp_path / "web"
    web_dir.mkdir()
    (web_dir / "index.html").write_text("<h1>ui</h1>")
    outside = tmp_path / "secret.txt"
    outside.write_text("the secret")
    (web_dir / "leak.txt").symlink_to(outside)
    (web_dir / "leakdir").symlink_to(tmp_path)
    app = create_app(make_settings(), web_dir)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/ui/")
        assert response.status == 200 and await response.text() == "<h1>ui</h1>"
        for path in ("/ui/leak.txt", "/ui/leakdir/secret.txt"):
            response = await client.get(path)
            assert response.status == 404, path
            assert "the secret" not in await response.text()


def test_api_routes_are_unchanged_around_the_interface(web_stack):
    status, _, body = fetch(web_stack.url, "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, body = fetch(web_stack.url, "/api/schemas")  # public: the forms need it
    assert status == 200 and "rpc_exec_create_task" in json.loads(body)
    status, _, _ = fetch(web_stack.url, "/api/tasks")
    assert status == 401
    status, _, body = fetch(web_stack.url, "/api/tasks?limit=1",
                            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert status == 200 and "tasks" in json.loads(body)


@pytest.mark.parametrize("page", PAGES)
def test_pages_label_every_input_and_load_nothing_from_elsewhere(page):
    parser = PageParser()
    parser.feed((WEB_DIR / page).read_text())
    for control in parser.controls:
        assert control.get("id") in parser.label_targets, (page, control)
    for reference in parser.references:
        assert not re.match(r"^(https?:)?//", reference), (page, reference)
    assert parser.scripts and all(s.get("type") == "module" for s in parser.scripts), page
    # the policy comes as a header from the gateway (tested on the served pages), once
    assert not any((m.get("http-equiv") or "").lower() == "content-security-policy"
                   for m in parser.metas), page
    assert any(m.get("name") == "viewport" for m in parser.metas), page
    assert "h1" in parser.headings, page


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_import_only_local_modules(script):
    source = (WEB_DIR / script).read_text()
    for target in re.findall(r"""(?:import|from)\s*\(?\s*["']([^"']+)["']""", source):
        assert target.startswith(("./", "../")), (script, target)
    urls = set(re.findall(r"https?://[^\s\"'`)]+", source)) - {SVG_NAMESPACE}
    assert not urls, (script, urls)
    assert "innerHTML" not in source and "alert(" not in source, script
    assert "localStorage" not in source, script  # the token stays in sessionStorage


def test_stylesheet_loads_nothing_from_elsewhere():
    for sheet in Path(WEB_DIR).rglob("*.css"):
        text = sheet.read_text()
        assert not re.search(r"url\(|@import|https?://", text), sheet


@pytest.mark.parametrize("path", ["/ui/", "/ui/task.html", "/ui/js/app.js"])
def test_pages_come_with_their_security_headers(web_stack, path):
    status, headers, _ = fetch(web_stack.url, path)
    assert status == 200
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "form-action 'none'" in policy
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "aiohttp" not in headers.get("Server", "") and "Python" not in headers.get("Server", "")


@pytest.mark.parametrize("path", ["/health", "/api/tasks", "/openapi.json", "/nowhere"])
def test_api_answers_cannot_be_rendered_or_framed(web_stack, path):
    _, headers, _ = fetch(web_stack.url, path)
    assert headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "aiohttp" not in headers.get("Server", "")
