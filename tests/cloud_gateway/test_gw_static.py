"""The gateway's static route serves only the web interface's own file types: the folder is a
Python package too, and its ``__init__.py`` and caches are never served."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from support import REPO_ROOT

from agata_common.config import Settings
from cloud_gateway.wiring import create_app

WEB_DIR = REPO_ROOT / "cloud_web_interface"
WebClient = TestClient[web.Request, web.Application]

SERVED = {
    "index.html": "text/html",
    "js/app.js": "javascript",
    "css/app.css": "text/css",
    "img/logo.svg": "image/svg+xml",
    "img/chart.png": "image/png",
    "favicon.ico": "image/",
}
NOT_SERVED = (
    "__init__.py",
    "__pycache__/__init__.cpython-311.pyc",
    "__pycache__/cached.js",
    "module.py",
    "notes.txt",
    "data.json",
    "config.ini",
    "Makefile",
    ".hidden.js",
    "js/.cache.css",
)


@pytest.fixture
async def web_client(make_settings: Callable[..., Settings], tmp_path: Path
                     ) -> AsyncIterator[WebClient]:
    """A gateway whose web folder holds web files and everything else a package may hold."""
    web_dir = tmp_path / "web"
    for name in (*SERVED, *NOT_SERVED):
        path = web_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {name}")
    async with TestClient(TestServer(create_app(make_settings(), web_dir))) as client:
        yield client


async def test_the_package_files_of_the_interface_are_not_served(
        make_settings: Callable[..., Settings]) -> None:
    assert (WEB_DIR / "__init__.py").is_file()
    async with TestClient(TestServer(create_app(make_settings(), WEB_DIR))) as client:
        for path in ("/ui/__init__.py", "/ui/__pycache__/__init__.cpython-311.pyc",
                     "/ui/js/../__init__.py", "/ui/%5F%5Finit%5F%5F.py"):
            response = await client.get(path)
            body = await response.text()
            assert response.status == 404, (path, response.status)
            assert "WEB_DIR" not in body and "import" not in body, path
        response = await client.get("/ui/index.html")
        assert response.status == 200
        assert response.content_type == "text/html"
        assert await response.read() == (WEB_DIR / "index.html").read_bytes()
        for path in ("/ui/", "/ui/js/app.js", "/ui/css/app.css", "/ui/favicon.svg"):
            response = await client.get(path)
            assert response.status == 200, path


async def test_only_web_file_types_are_served(web_client: WebClient) -> None:
    for name, content_type in SERVED.items():
        response = await web_client.get(f"/ui/{name}")
        assert response.status == 200, name
        assert content_type in response.content_type, (name, response.content_type)
        assert await response.text() == f"content of {name}"
    for name in NOT_SERVED:
        response = await web_client.get(f"/ui/{name}")
        assert response.status == 404, (name, response.status)
        assert response.content_type == "application/json", name
        assert "content of" not in await response.text(), name
