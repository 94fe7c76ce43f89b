"""backend.daemon.access: which daemons need a token, which token passes, and which
file paths a daemon restricted to its roots reads (through the server:
tests/backend/daemon/test_server.py)."""

from __future__ import annotations

import os

import pytest

import protocol as P
from backend.daemon.access import Access, roots_from_env
from protocol.errors import ProtocolError


def test_roots_come_from_the_environment_without_empty_entries(monkeypatch):
    monkeypatch.setenv("ORTHOLENS_ROOTS", os.pathsep.join(["/a", "", " ", "/b c"]))
    assert roots_from_env() == ["/a", "/b c"]
    monkeypatch.delenv("ORTHOLENS_ROOTS")
    assert roots_from_env() == []


def test_the_rules_of_a_bind_address(monkeypatch, tmp_path):
    monkeypatch.setenv("ORTHOLENS_ROOTS", str(tmp_path))
    local = Access.for_bind("127.0.0.1")
    assert (local.token, local.restrict_paths) == (None, False)
    assert local.allowed_roots == [os.path.realpath(tmp_path)]
    with pytest.raises(ValueError) as e:
        Access.for_bind("192.0.2.1")
    assert str(e.value) == ("binding '192.0.2.1' (not loopback) requires a token "
                            "(--token or ORTHOLENS_TOKEN)")
    public = Access.for_bind("0.0.0.0", token="t", allowed_roots=["/x/../y"])
    assert (public.token, public.restrict_paths, public.allowed_roots) == ("t", True, ["/y"])
    assert Access.for_bind("::1", restrict_paths=True).restrict_paths
    assert not Access.for_bind("0.0.0.0", token="t", restrict_paths=False).restrict_paths
    assert Access("", False, []).token is None  # an empty token is none


@pytest.mark.parametrize("given", [None, "", "wrong", "s3cre", "s3cret ", 7, ["s3cret"],
                                   "\ud800"])
def test_a_missing_or_wrong_token_is_forbidden(given):
    access = Access("s3cret", False, [])
    header = {} if given is None else {"token": given}
    with pytest.raises(ProtocolError) as e:
        access.check_token(header)
    assert (e.value.code, e.value.field, e.value.message) == (
        P.E_FORBIDDEN, "token", "missing or wrong token")
    access.check_token({"token": "s3cret"})
    Access(None, False, []).check_token({"token": given})  # no token: anything goes


def test_restricted_paths_resolve_inside_the_roots(tmp_path):
    tmp_path = tmp_path.resolve()
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret.tif").write_bytes(b"x")
    os.symlink(tmp_path / "secret.tif", root / "link.tif")
    os.symlink(root / "sub", tmp_path / "way_in")
    access = Access(None, True, [str(root)])
    assert access.check_path(str(root / "sub" / ".." / "a.tif")) == str(root / "a.tif")
    assert access.check_path(str(tmp_path / "way_in" / "b.tif")) == str(root / "sub" / "b.tif")
    assert access.check_path(str(root)) == str(root)
    for path in (str(root / "link.tif"), str(root / ".." / "secret.tif"),
                 str(tmp_path / "root2" / "a.tif"), "/etc/passwd"):
        with pytest.raises(ProtocolError) as e:
            access.check_path(path)
        assert (e.value.code, e.value.field) == (P.E_FORBIDDEN, "source"), path
        assert "outside the folders this daemon may read" in e.value.message
    with pytest.raises(ProtocolError):  # no roots: no files
        Access(None, True, []).check_path(str(root / "a.tif"))
    # unrestricted: the path as given, not even resolved
    assert Access(None, False, []).check_path("/x/../etc/passwd") == "/x/../etc/passwd"


def test_a_daemon_restricted_to_folders_refuses_urls():
    url = "http://127.0.0.1:8000/vienna_cog.tif"
    access = Access(token="t", restrict_paths=True, allowed_roots=[os.getcwd()])
    with pytest.raises(ProtocolError) as info:
        access.check_source({"kind": "file", "path": url})
    assert info.value.code == "forbidden" and "URLs" in info.value.message
    with pytest.raises(ProtocolError):
        access.check_source({"kind": "file", "path": "/vsicurl/" + url})
    assert Access(None, False, []).check_path(url) == url


def test_a_source_gets_its_resolved_path_and_pixels_pass(tmp_path):
    tmp_path = tmp_path.resolve()
    access = Access(None, True, [str(tmp_path)])
    pixels = {"kind": "pixels", "crs": "EPSG:2056", "transform": [1, 0, 0, 0, -1, 0]}
    assert access.check_source(pixels) is pixels
    plain = {"kind": "file", "path": str(tmp_path / "a.tif"), "bands": [1, 2, 3]}
    assert access.check_source(plain) is plain
    dotted = {"kind": "file", "path": str(tmp_path / "x" / ".." / "a.tif")}
    checked = access.check_source(dotted)
    assert checked == {"kind": "file", "path": str(tmp_path / "a.tif")}
    assert dotted["path"].endswith(os.path.join("x", "..", "a.tif"))  # not changed
