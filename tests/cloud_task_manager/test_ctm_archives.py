"""Unpacking uploaded app archives: paths, kinds, sizes, counts, the top folder."""

import io
import stat
import zipfile

import pytest

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


def test_a_fab_keeps_its_paths_and_leaves_out_hidden_entries() -> None:
    fab = make_zip({"pyproject.toml": b"[project]\n", "app/server_app.py": b"x = 1\n",
                    ".info/CONTENT": b"hashes", "app/__pycache__/a.pyc": b"\x00"})
    unpacked = unpack_archive(fab, **LIMITS)
    assert [path for path, _ in unpacked.files] == ["pyproject.toml", "app/server_app.py"]
    assert sorted(unpacked.skipped) == [".info/CONTENT", "app/__pycache__/a.pyc"]


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
