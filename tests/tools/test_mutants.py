"""tools.mutants without running mutmut: which mutants belong to the scope, how exit
codes read, and the committed list of survivors that the task checks against."""

from __future__ import annotations

import re

from tools.mutants import EXPLAINED, SCOPE, Scope, explained_names, setup_cfg, verdict
from tests.support import REPO


def test_scope_patterns_and_exclusions():
    s = Scope("protocol/framing.py", ("*",), ("tests/protocol/test_framing.py",),
              exclude=("x_parse_endpoint",))
    assert s.module == "protocol.framing" and s.patterns() == ["protocol.framing.*"]
    assert s.covers("protocol.framing.x_decode__mutmut_3")
    assert not s.covers("protocol.framing.x_parse_endpoint__mutmut_1")
    assert not s.covers("protocol.metrics.x_compare__mutmut_1")
    r = Scope("backend/inference/raster.py", ("x_plan_grid",), ())
    assert r.patterns() == ["backend.inference.raster.x_plan_grid__mutmut_*"]
    assert r.covers("backend.inference.raster.x_plan_grid__mutmut_12")
    assert not r.covers("backend.inference.raster.x_plan_grid_extra__mutmut_1")
    assert not r.covers("backend.inference.raster.x_open_source__mutmut_1")


def test_exit_codes_read_as_verdicts():
    assert [verdict(c) for c in (0, 1, 3, 5, 33, 36, -24, None)] == [
        "survived", "killed", "killed", "no tests", "no tests", "killed", "killed",
        "not checked"]


def test_the_configuration_names_every_module_and_test_file():
    cfg = setup_cfg(SCOPE)
    for s in SCOPE:
        assert f"    {s.path}\n" in cfg
        for t in s.tests:
            assert f"    {t}\n" in cfg and (REPO / t).is_file(), t


def test_every_explained_survivor_is_in_the_scope_and_has_a_reason():
    rows = explained_names(EXPLAINED.read_text())
    assert len(rows) >= 1
    for name, reason in rows.items():
        assert any(s.covers(name) for s in SCOPE), name
        assert len(re.split(r"(?<!\\)\|", reason)[-1].strip()) > 20, name
    assert explained_names("| `a.x_f__mutmut_2` | `x` | why |\n| not a row |") == {
        "a.x_f__mutmut_2": "`x` | why"}


def test_a_run_of_one_module_judges_only_that_module(monkeypatch):
    """With ``--module``, explanations of the other modules are not called stale, while
    a killed mutant of the module that ran still is; an unexplained survivor fails."""
    import tools.mutants as M
    monkeypatch.setattr(M, "diffs", lambda names: {})
    explained = {"backend.inference.raster.x_plan_grid__mutmut_1": "why",
                 "backend.inference.raster.x_plan_grid__mutmut_2": "why",
                 "backend.inference.tiling.x_ramp__mutmut_3": "why"}
    res = {"backend/inference/raster.py": [
        ("backend.inference.raster.x_plan_grid__mutmut_1", "survived"),
        ("backend.inference.raster.x_plan_grid__mutmut_2", "killed"),
        ("backend.inference.raster.x_plan_grid__mutmut_4", "killed")]}
    text, ok = M.report(res, explained, 60.0)
    stale = [line for line in text.splitlines() if "killed or gone" in line]
    assert len(stale) == 1 and "raster.x_plan_grid__mutmut_2" in stale[0]
    assert "tiling" not in stale[0]
    res["backend/inference/raster.py"].append(
        ("backend.inference.raster.x_plan_grid__mutmut_5", "survived"))
    text, ok = M.report(res, explained, 60.0)
    assert not ok and "mutmut_5 (survived)   <- NOT EXPLAINED" in text
