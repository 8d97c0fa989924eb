"""Unpacking uploaded app archives: paths, kinds, sizes, counts, the top folder, a FAB's
.info/CONTENT."""

import hashlib
import io
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

from cloud_task_manager.archives import ArchiveError, unpack_archive

pytestmark = pytest.mark.unit

LIMITS = {"max_file_bytes": 1000, "max_files": 5, "max_total_bytes": 2500}


def make_zip(entries: dict[str, bytes], *, links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def with_content(entries: dict[str, bytes]) -> dict[str, bytes]:
    """The entries plus the ``.info/CONTENT`` that lists them, as ``flwr build`` writes it."""
    lines = [f"{name},{hashlib.sha256(data).hexdigest()},{len(data) * 8}"
             for name, data in entries.items()]
    return {**entries, ".info/CONTENT": "\n".join(lines).encode()}


def test_a_fab_keeps_its_paths_and_leaves_out_hidden_entries() -> None:
    fab = make_zip(with_content({"pyproject.toml": b"[project]\n",
                                 "app/server_app.py": b"x = 1\n",
                                 "app/__pycache__/a.pyc": b"\x00"}))
    unpacked = unpack_archive(fab, **LIMITS)
    assert [path for path, _ in unpacked.files] == ["pyproject.toml", "app/server_app.py"]
    assert sorted(unpacked.skipped) == [".info/CONTENT", "app/__pycache__/a.pyc"]
    assert unpack_archive(fab, fab=True, **LIMITS).files == unpacked.files


def test_one_top_folder_is_unpacked_from_inside() -> None:
    zipped = make_zip({"myapp/pyproject.toml": b"t", "myapp/pkg/client_app.py": b"c"})
    unpacked = unpack_archive(zipped, **LIMITS)
    assert [path for path, _ in unpacked.files] == ["pyproject.toml", "pkg/client_app.py"]


@pytest.mark.parametrize(("entries", "links", "says"), [
    ({"../evil.py": b"x"}, (), "'..'"),
    ({"/abs.py": b"x", "ok.py": b"y"}, (), "absolute"),
    ({"ok.py": b"x"}, ("link.py",), "no links"),
    ({"big.bin": b"0" * 1001}, (), "the limit is 1000"),
    ({f"f{i}.py": b"x" for i in range(6)}, (), "at most 5"),
    ({"a.bin": b"0" * 900, "b.bin": b"0" * 900, "c.bin": b"0" * 900}, (), "in all"),
    ({".hidden": b"x"}, (), "no files to store"),
])
def test_bad_archives_are_refused_saying_why(entries, links, says) -> None:
    with pytest.raises(ArchiveError) as info:
        unpack_archive(make_zip(entries, links=links), **LIMITS)
    assert says in str(info.value), str(info.value)


def test_a_lying_size_header_stops_at_the_limit() -> None:
    data = make_zip({"bomb.bin": b"\x00" * 50_000})
    patched = bytearray(data)
    # the announced size (local header and central directory) says 10 bytes
    for marker in (b"PK\x03\x04", b"PK\x01\x02"):
        start = patched.find(marker)
        offset = 22 if marker == b"PK\x03\x04" else 24
        patched[start + offset:start + offset + 4] = (10).to_bytes(4, "little")
    with pytest.raises(ArchiveError) as info:
        unpack_archive(bytes(patched), **LIMITS)
    assert "bomb.bin" in str(info.value)


def test_not_a_zip_says_so() -> None:
    with pytest.raises(ArchiveError, match="not a zip archive"):
        unpack_archive(b"plain text", **LIMITS)


NUMPY_APP = Path(__file__).resolve().parents[2] / "tasks" / "app_numpy"
FAB_LIMITS = {"max_file_bytes": 100_000, "max_files": 10, "max_total_bytes": 200_000}


def rebuilt(fab: bytes, change: Callable[[dict[str, bytes]], None]) -> bytes:
    """The FAB's entries, changed by ``change``, zipped again."""
    with zipfile.ZipFile(io.BytesIO(fab)) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    change(entries)
    return make_zip(entries)


@pytest.fixture(scope="module")
def flower_fab() -> bytes:
    """The numpy app as Flower's own ``flwr build`` makes it (in-process, offline)."""
    return build_fab_from_disk(NUMPY_APP)


def test_a_fab_built_by_flower_passes_its_content_check(flower_fab: bytes) -> None:
    unpacked = unpack_archive(flower_fab, fab=True, **FAB_LIMITS)
    assert "numpyapp/client_app.py" in [path for path, _ in unpacked.files]
    assert unpacked.skipped == [".info/CONTENT"]


def _tamper(entries: dict[str, bytes]) -> None:
    entries["numpyapp/client_app.py"] += b"\nimport os\n"


def _extra(entries: dict[str, bytes]) -> None:
    entries["numpyapp/backdoor.py"] = b"x = 1\n"


def _extra_hidden(entries: dict[str, bytes]) -> None:
    entries[".info/other"] = b"x"


def _missing(entries: dict[str, bytes]) -> None:
    del entries["numpyapp/server_app.py"]


def _lying_size(entries: dict[str, bytes]) -> None:
    lines = entries[".info/CONTENT"].decode().split("\n")
    path, digest, _ = lines[1].split(",")
    lines[1] = f"{path},{digest},8"
    entries[".info/CONTENT"] = "\n".join(lines).encode()


def _garbled(entries: dict[str, bytes]) -> None:
    entries[".info/CONTENT"] = b"pyproject.toml,nothex,12"


def _no_manifest(entries: dict[str, bytes]) -> None:
    del entries[".info/CONTENT"]


@pytest.mark.parametrize(("change", "says"), [
    (_tamper, "numpyapp/client_app.py: its sha256 does not match .info/CONTENT"),
    (_extra, "numpyapp/backdoor.py: in the archive but not listed in .info/CONTENT"),
    (_extra_hidden, ".info/other: in the archive but not listed"),
    (_missing, "numpyapp/server_app.py: listed in .info/CONTENT but missing from the archive"),
    (_lying_size, "numpyapp/__init__.py: 736 bits, .info/CONTENT says 8"),
    (_garbled, ".info/CONTENT line 1 (pyproject.toml): not a sha256"),
    (_no_manifest, "a .fab must hold .info/CONTENT"),
])
def test_a_fab_that_disagrees_with_its_content_is_refused_naming_the_file(
        flower_fab: bytes, change: Callable[[dict[str, bytes]], None], says: str) -> None:
    with pytest.raises(ArchiveError) as info:
        unpack_archive(rebuilt(flower_fab, change), fab=True, **FAB_LIMITS)
    assert says in str(info.value), str(info.value)


def test_a_zip_carrying_a_fab_manifest_is_checked_too(flower_fab: bytes) -> None:
    with pytest.raises(ArchiveError, match="backdoor.py"):
        unpack_archive(rebuilt(flower_fab, _extra), **FAB_LIMITS)
    plain = rebuilt(flower_fab, _no_manifest)
    assert unpack_archive(plain, **FAB_LIMITS).skipped == []


def test_duplicate_entries_in_a_fab_are_refused(flower_fab: bytes) -> None:
    buffer = io.BytesIO(flower_fab)
    with zipfile.ZipFile(buffer, "a") as archive, pytest.warns(UserWarning):
        archive.writestr("numpyapp/client_app.py", b"evil = 1\n")
    with pytest.raises(ArchiveError, match="client_app.py: appears twice"):
        unpack_archive(buffer.getvalue(), fab=True, **FAB_LIMITS)


def test_a_manifest_path_is_shown_printable_and_short(flower_fab: bytes) -> None:
    def listed_only(entries: dict[str, bytes]) -> None:
        entries[".info/CONTENT"] += ("\n" + "x\x1b[31m" * 100 + ",").encode() + \
            b"0" * 64 + b",8"

    with pytest.raises(ArchiveError) as info:
        unpack_archive(rebuilt(flower_fab, listed_only), fab=True, **FAB_LIMITS)
    message = str(info.value)
    assert "\x1b" not in message and len(message) < 300, message
    assert "missing from the archive" in message
