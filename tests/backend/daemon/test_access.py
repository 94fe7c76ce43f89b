"""backend.daemon.access: which daemons need a token, which token passes, and which
file paths a daemon restricted to its roots reads and writes: every path of every
request type (``REQUEST_PATHS``) against ``..``, symlinks, absolute paths and write
targets outside the roots, and the same requests inside them; then through a real
daemon for batch jobs and retrain's reviewed areas (the detection's source:
tests/backend/daemon/test_server.py)."""

from __future__ import annotations

import copy
import os
from typing import Any, Callable, Dict, NamedTuple

import pytest

import protocol as P
from backend.daemon.access import (READ, REQUEST_PATHS, WRITE, Access, PathField, _layer,
                                   _source, roots_from_env)
from protocol import checks as C
from protocol.errors import ProtocolError
from protocol.importing import check_onnx_path


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


def test_a_token_with_bytes_that_are_not_utf8_passes_only_itself():
    """A token read from ``ORTHOLENS_TOKEN`` or the command line with bytes that are not
    UTF-8 holds lone surrogates (``os.fsdecode``): it is compared like any other."""
    token = os.fsdecode(b"s3\xffcret")
    assert token == "s3\udcffcret"
    access = Access(token, False, [])
    access.check_token({"token": os.fsdecode(b"s3\xffcret")})
    for given in ("s3cret", "s3\udcfecret", "s3\xffcret"):
        with pytest.raises(ProtocolError) as e:
            access.check_token({"token": given})
        assert (e.value.code, e.value.field) == (P.E_FORBIDDEN, "token"), given


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
        assert e.value.message == ("the raster path is outside the folders this daemon "
                                   "may read (ORTHOLENS_ROOTS)")
    with pytest.raises(ProtocolError):  # no roots: no files
        Access(None, True, []).check_path(str(root / "a.tif"))
    # the root folder itself as the root: every absolute path is inside
    assert Access(None, True, [os.sep]).check_path(str(root / "link.tif")) == str(
        tmp_path / "secret.tif")
    # unrestricted: the path as given, not even resolved
    assert Access(None, False, []).check_path("/x/../etc/passwd") == "/x/../etc/passwd"


def test_a_daemon_restricted_to_folders_refuses_urls():
    url = "http://127.0.0.1:8000/vienna_cog.tif"
    access = Access(token="t", restrict_paths=True, allowed_roots=[os.getcwd()])
    for path in (url, "https://127.0.0.1:8443/vienna_cog.tif", "/vsicurl/" + url):
        with pytest.raises(ProtocolError) as info:
            access.check_request(P.request("detect", source=_file(path), model="m"))
        assert (info.value.code, info.value.field) == ("forbidden", "source")
        assert "URLs" in info.value.message
    with pytest.raises(ProtocolError) as info:
        access.check_request(P.request("inventory", detections={"path": "in.gpkg"},
                                       out_dir="/vsimem/out"))
    assert (info.value.field, info.value.message.split(" only")[0]) == (
        "out_dir", "this daemon writes")
    assert Access(None, False, []).check_path(url) == url


# ----------------------------------------------------------------------------- every request

def _file(path: str) -> Dict[str, Any]:
    return {"kind": "file", "path": path}


FEATURES = [{"wkt": "POLYGON ((0 0, 1 0, 1 1, 0 0))", "class_id": 1}]


class Spec(NamedTuple):
    """One path of one request type: ``build(path, inside)`` gives the request's
    fields with ``path`` at that place (``inside(ext)``: a file in the roots for the
    other paths), ``get(header)`` reads it back."""
    mtype: str
    field: str
    mode: str
    ext: str
    build: Callable[[str, Callable[[str], str]], Dict[str, Any]]
    get: Callable[[Dict[str, Any]], str]


def _layers(name: str) -> Spec:
    def build(p, inside):
        return {"detections": {"path": inside(".gpkg")}, "out_dir": inside(""),
                name: {"path": p}}
    return Spec("inventory", name, READ, ".gpkg", build, lambda h: h[name]["path"])


SPECS = [
    Spec("detect", "source", READ, ".tif",
         lambda p, i: dict(source=_file(p), model="m"), lambda h: h["source"]["path"]),
    Spec("region", "source", READ, ".tif",
         lambda p, i: dict(source=_file(p), model="m", x=1.0, y=2.0, crs="EPSG:2056"),
         lambda h: h["source"]["path"]),
    Spec("retrain", "source", READ, ".tif",
         lambda p, i: dict(source=_file(p), model="m", features=FEATURES),
         lambda h: h["source"]["path"]),
    Spec("retrain", "reviewed", READ, ".tif",
         lambda p, i: dict(source=_file(i(".tif")), model="m", features=FEATURES,
                           reviewed=[{"extent": [0, 0, 1, 1]},
                                     {"source": _file(i(".tif"))},
                                     {"source": _file(p), "holdout": True}]),
         lambda h: h["reviewed"][2]["source"]["path"]),
    Spec("batch", "source", READ, ".tif",
         lambda p, i: dict(source=_file(p), model="m", out_path=i(".gpkg")),
         lambda h: h["source"]["path"]),
    Spec("batch", "out_path", WRITE, ".gpkg",
         lambda p, i: dict(source=_file(i(".tif")), model="m", out_path=p),
         lambda h: h["out_path"]),
    _layers("detections"), _layers("buildings"), _layers("zones"), _layers("earlier"),
    Spec("inventory", "out_dir", WRITE, "",
         lambda p, i: dict(detections={"path": i(".gpkg")}, out_dir=p),
         lambda h: h["out_dir"]),
    Spec("import_model", "path", READ, ".onnx", lambda p, i: dict(path=p),
         lambda h: h["path"]),
]

#: Paths that leave the roots: (root, outside, ext) -> path. Reads name files that exist
#: outside; writes name files not created yet.
READ_ESCAPES = {
    "dotdot": lambda r, o, e: os.path.join(r, "sub", "..", "..", "outside", f"secret{e}"),
    "symlink": lambda r, o, e: os.path.join(r, f"link{e}"),
    "absolute": lambda r, o, e: os.path.join(o, f"secret{e}"),
}
WRITE_ESCAPES = {
    "dotdot": lambda r, o, e: os.path.join(r, "new", "..", "..", "outside", f"new{e}"),
    "symlink_folder": lambda r, o, e: os.path.join(r, "linkdir", f"new{e}"),
    "dangling_symlink": lambda r, o, e: os.path.join(r, f"dangling{e}"),
    "absolute": lambda r, o, e: os.path.join(o, f"new{e}"),
    "new_folder_outside": lambda r, o, e: os.path.join(o, "a", "b", f"new{e}"),
}


@pytest.fixture
def tree(tmp_path):
    """``root`` (the only allowed root) and ``outside`` beside it: in each a file per
    extension (``in<ext>``, ``secret<ext>``); in the root, symlinks to the secrets
    (``link<ext>``), to files not created yet outside (``dangling<ext>``) and to the
    outside folder (``linkdir``); outside, ``way_in`` leads into the root."""
    base = tmp_path.resolve()
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    for ext in {s.ext for s in SPECS}:
        (root / f"in{ext}").write_bytes(b"x")
        (outside / f"secret{ext}").write_bytes(b"x")
        os.symlink(outside / f"secret{ext}", root / f"link{ext}")
        os.symlink(outside / f"new{ext}", root / f"dangling{ext}")
    os.symlink(outside, root / "linkdir")
    os.symlink(root, outside / "way_in")
    return str(root), str(outside)


def _cases():
    return [pytest.param(spec, make, id=f"{spec.mtype}-{spec.field}-{name}")
            for spec in SPECS
            for name, make in (WRITE_ESCAPES if spec.mode == WRITE else READ_ESCAPES).items()]


def test_the_specs_cover_every_path_of_every_request_type():
    """Every request field whose checker takes a path has its rule, and these tests a
    spec for each: a new path field, or a new request type, fails here until both
    exist."""
    path_checks = {C.check_source, C.check_source_or_upload, C.check_file_source,
                   C.check_reviewed, C.check_path, C.check_gpkg_path, check_onnx_path,
                   C.check_vector_layer, C.check_optional_vector_layer}
    assert set(REQUEST_PATHS) == set(P.REQUEST_TYPES)
    for mtype, rules in P.REQUEST_SCHEMAS.items():
        named = {name for name, rule in rules.items() if rule.check in path_checks}
        assert named == {pf.at[0] for pf in REQUEST_PATHS[mtype]}, mtype
    assert {(s.mtype, s.field, s.mode) for s in SPECS} == {
        (t, pf.field, pf.mode) for t, fields in REQUEST_PATHS.items() for pf in fields}
    with pytest.raises(KeyError, match="no path rule for request type 'new'"):
        Access(None, False, []).check_request({"type": "new"})


def _layer_rule(name: str) -> tuple:
    return (name, (name, "path"), READ, f"the {name} layer's path")


#: Every rule of ``REQUEST_PATHS`` as ``(field, at, mode, what)``, written out by hand.
RULES = {
    "detect": [("source", ("source", "path"), READ, "the raster path")],
    "region": [("source", ("source", "path"), READ, "the raster path")],
    "retrain": [("source", ("source", "path"), READ, "the raster path"),
                ("reviewed", ("reviewed", "*", "source", "path"), READ,
                 "the raster of reviewed area {0}")],
    "batch": [("source", ("source", "path"), READ, "the raster path"),
              ("out_path", ("out_path",), WRITE, "the output file")],
    "inventory": [_layer_rule("detections"), _layer_rule("buildings"), _layer_rule("zones"),
                  _layer_rule("earlier"), ("out_dir", ("out_dir",), WRITE, "the output folder")],
    "import_model": [("path", ("path",), READ, "the model path")],
}


def test_each_rule_names_its_field_place_mode_and_what_the_error_calls_it():
    """The table field by field, and the rules its helpers build (a raster source, a
    vector layer): what a refusal says (``what``) is what the user reads."""
    as_rows = {t: [(pf.field, pf.at, pf.mode, pf.what) for pf in fields]
               for t, fields in REQUEST_PATHS.items() if fields}
    assert as_rows == RULES
    assert _source() == PathField(*RULES["detect"][0])
    assert _source("other") == PathField("other", ("other", "path"), READ, "the raster path")
    assert [_layer(n) for n in ("detections", "buildings", "zones", "earlier")] == [
        PathField(*r) for r in RULES["inventory"][:4]]


def test_paths_that_are_missing_none_or_not_strings_are_left_as_they_are(tree):
    """``check_request`` on headers the schema has not checked: a path field that is
    missing, None, a number, a list where a dict is expected or a dict where a list is
    expected names no path, and comes back unchanged (no error of the path rules)."""
    root, _ = tree
    access = Access(None, True, [root])
    for header in ({"type": "import_model"}, {"type": "import_model", "path": None},
                   {"type": "import_model", "path": 7},
                   {"type": "batch", "source": {"kind": "file", "path": 7}, "out_path": 3.5},
                   {"type": "batch", "source": ["a.tif"], "out_path": ["o.gpkg"]},
                   {"type": "retrain", "source": {"kind": "file"},
                    "reviewed": {"source": {"path": "/etc/passwd"}}},
                   {"type": "retrain", "reviewed": [7, {"source": None},
                                                    {"source": {"path": b"/etc/passwd"}}]},
                   {"type": "inventory", "detections": "/etc/passwd", "zones": {"path": 1}}):
        before = copy.deepcopy(header)
        assert access.check_request(header) == before, header


@pytest.mark.parametrize("spec,escape", _cases())
def test_a_path_outside_the_roots_is_forbidden(tree, spec, escape):
    root, outside = tree
    path = escape(root, outside, spec.ext)
    header = P.request(spec.mtype, **spec.build(path, lambda e: os.path.join(root, f"in{e}")))
    before = copy.deepcopy(header)
    with pytest.raises(ProtocolError) as e:
        Access(None, True, [root]).check_request(header)
    assert (e.value.code, e.value.field) == (P.E_FORBIDDEN, spec.field)
    verb = "write" if spec.mode == WRITE else "read"
    assert e.value.message.endswith(
        f"is outside the folders this daemon may {verb} (ORTHOLENS_ROOTS)")
    if spec.field == "reviewed":
        assert e.value.message.startswith("the raster of reviewed area 2 ")
    assert header == before  # the request itself is not changed
    # the same request from a daemon that does not restrict paths: as it is
    assert Access(None, False, [root]).check_request(header) is header


@pytest.mark.parametrize("spec", SPECS, ids=[f"{s.mtype}-{s.field}" for s in SPECS])
def test_the_same_request_inside_the_roots_passes_resolved(tree, spec):
    root, outside = tree
    name = f"{'new' if spec.mode == WRITE else 'in'}{spec.ext}"
    access = Access(None, True, [root])
    for given in (os.path.join(root, "sub", "..", name),  # .. that stays inside
                  os.path.join(outside, "way_in", name)):  # a symlink leading in
        header = P.request(spec.mtype, **spec.build(
            given, lambda e: os.path.join(outside, "way_in", "sub", "..", f"in{e}")))
        before = copy.deepcopy(header)
        checked = access.check_request(header)
        assert spec.get(checked) == os.path.join(root, name)
        assert header == before
        # the other paths of the request are resolved too
        for other in SPECS:
            if other.mtype == spec.mtype and other.field != spec.field:
                try:
                    value = other.get(checked)
                except (KeyError, IndexError, TypeError):
                    continue  # an optional path this request does not carry
                assert value == os.path.join(root, f"in{other.ext}"), other.field


def test_pixels_and_uploads_name_no_path(tree):
    root, _ = tree
    access = Access(None, True, [root])
    pixels = {"kind": "pixels", "crs": "EPSG:2056", "transform": [1, 0, 0, 0, -1, 0]}
    for header in (P.request("detect", source=pixels, model="m"),
                   P.request("detect", source={"kind": "upload", "upload_id": "a" * 32},
                             model="m"),
                   P.request("retrain", source=pixels, model="m", features=FEATURES,
                             reviewed=[{"source": pixels, "array": 1}, {}]),
                   P.request("upload", crs="EPSG:2056", transform=[1, 0, 0, 0, -1, 0],
                             width=8, height=8, count=3, dtype="uint8")):
        assert access.check_request(header) == header


# ----------------------------------------------------------------------------- a real daemon

def test_a_restricted_daemon_refuses_batch_paths_outside_its_roots(tree, tmp_path):
    """``batch`` and ``resume`` through a daemon on 127.0.0.1: a raster or an output
    outside the roots is refused before any job is recorded; inside, the request gets
    as far as the job's own checks (a missing raster)."""
    from backend.daemon.jobstore import JobStore
    from protocol.client import OrtholensClient
    from protocol.errors import DaemonError
    from protocol.params import BatchParams, DetectParams, FileSource
    from tests.support import DEFAULT_MODEL, running_server

    root, outside = tree
    jobs_dir = str(tmp_path / "jobs")

    def batch(raster, out):
        return BatchParams(DetectParams(FileSource(raster), DEFAULT_MODEL), out_path=out)

    refused = [(batch(os.path.join(root, "link.tif"), os.path.join(root, "o.gpkg")),
                "source"),
               (batch(os.path.join(root, "in.tif"), os.path.join(root, "linkdir", "o.gpkg")),
                "out_path"),
               (batch(os.path.join(root, "in.tif"), os.path.join(outside, "o.gpkg")),
                "out_path")]
    store = JobStore(jobs_dir)  # jobs a daemon without roots accepted earlier
    stored = {"0" * 32: (os.path.join(outside, "secret.tif"), os.path.join(root, "o.gpkg"),
                         "source"),
              "1" * 32: (os.path.join(root, "in.tif"), os.path.join(outside, "o.gpkg"),
                         "out_path")}
    for job_id, (raster, out, _) in stored.items():
        store.create(job_id, {"source": _file(raster), "model": DEFAULT_MODEL,
                              "out_path": out})
    with running_server(restrict_paths=True, allowed_roots=[root], jobs_dir=jobs_dir) as (
            server, _), OrtholensClient(server.endpoint, timeout_s=30) as c:
        for params, field in refused:
            with pytest.raises(DaemonError) as e:
                c.submit_batch(params)
            assert (e.value.code, e.value.field) == (P.E_FORBIDDEN, field)
        with pytest.raises(DaemonError) as e:
            c.submit_batch(batch(os.path.join(root, "missing.tif"),
                                 os.path.join(root, "o.gpkg")))
        assert e.value.code == P.E_NOT_FOUND and "raster file not found" in e.value.message
        assert sorted(j["job_id"] for j in c.jobs()) == sorted(stored)  # none recorded
        for job_id, (_, _, field) in stored.items():
            with pytest.raises(DaemonError) as e:
                c.resume_request(job_id)
            assert (e.value.code, e.value.field) == (P.E_FORBIDDEN, field)
        assert server.batch.active_count() == 0


def test_a_restricted_daemon_refuses_reviewed_areas_outside_its_roots(tree):
    """``retrain`` through a daemon on 127.0.0.1: a reviewed area's raster outside the
    roots is refused, naming ``reviewed``; inside, the job gets every path resolved."""
    from protocol.client import OrtholensClient
    from protocol.errors import DaemonError
    from protocol.params import RetrainParams
    from tests.support import running_server

    root, outside = tree
    seen = []

    def retrain(request, arrays, progress, cancelled):
        seen.append(request)
        return {"crs": "EPSG:2056", "features": [], "stats": {}}

    def params(*sources):
        return RetrainParams(_file(os.path.join(root, "in.tif")), "m", FEATURES,
                             reviewed=[{"source": _file(s)} for s in sources])

    escapes = [os.path.join(root, "link.tif"), os.path.join(outside, "secret.tif"),
               os.path.join(root, "..", "outside", "secret.tif")]
    with running_server(restrict_paths=True, allowed_roots=[root], retrain_fn=retrain) as (
            server, _), OrtholensClient(server.endpoint, timeout_s=30) as c:
        for bad in escapes:
            with pytest.raises(DaemonError) as e:
                c.retrain(params(os.path.join(root, "in.tif"), bad))
            assert (e.value.code, e.value.field) == (P.E_FORBIDDEN, "reviewed")
            assert e.value.message.startswith("the raster of reviewed area 1 ")
        assert seen == []
        c.retrain(params(os.path.join(outside, "way_in", "in.tif"),
                         os.path.join(root, "sub", "..", "in.tif")))
    assert [a["source"]["path"] for a in seen[0]["reviewed"]] == [
        os.path.join(root, "in.tif")] * 2
