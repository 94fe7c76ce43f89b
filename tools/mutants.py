"""Mutation testing of the core modules with mutmut: do the tests catch wrong code?

    python -m tools.mutants [--max-children N] [--module PATH ...]   (build.py mutants)

mutmut (3.x) copies the source into a work folder, writes every mutant (``<`` for
``<=``, ``1`` for ``0``, a dropped argument, ``"XX..XX"`` around a string, ...) into
that copy behind a switch, and runs, for each mutant, the tests of :data:`SCOPE` that
reach the mutated function; a mutant *survives* when they all still pass. Only the
functions each :class:`Scope` names are mutated (the parts of a module that are pure
enough for fast tests); only its test files run (per-module selection), so a run takes
minutes on two cores, not the whole suite's ten.

Everything is written under ``out/mutants/`` (a fresh copy each run, never the source
tree). The report lists, per module, mutants / killed / survived, then every survivor
with its diff. A survivor must be explained in :data:`EXPLAINED` (``tools/
mutants_equivalent.md``: why it is equivalent or harmless); the exit status is 1 when
more than :data:`MAX_SURVIVING` of the mutants survive or a survivor is not explained
there, so an edit that weakens a test, or new code without tests, shows.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from backend.config import data_dir

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "out" / "mutants"
#: Survivors and why each is equivalent or harmless, one backticked name per table row.
EXPLAINED = REPO / "tools" / "mutants_equivalent.md"
#: Largest share of surviving mutants (survived or reached by no test) that passes.
MAX_SURVIVING = 0.10


@dataclass(frozen=True)
class Scope:
    """One module under mutation.

    Attributes:
        path: the source file, relative to the repository.
        functions: mutmut's mangled names of the functions mutated (``x_name`` for a
            function, ``xǁClassǁmethod`` for a method), or ``("*",)`` for every one.
        tests: the test files whose tests may kill its mutants.
        exclude: mangled names of functions left out of ``("*",)``.
    """

    path: str
    functions: Tuple[str, ...]
    tests: Tuple[str, ...]
    exclude: Tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """Dotted module name, as mutmut names mutants (``backend.inference.tiling``)."""
        return self.path[:-len(".py")].replace("/", ".")

    def patterns(self) -> List[str]:
        """mutmut's mutant-name patterns of this scope."""
        return [f"{self.module}.{f}__mutmut_*" if f != "*" else f"{self.module}.*"
                for f in self.functions]

    def covers(self, mutant: str) -> bool:
        """Whether ``mutant`` (a mutmut mutant name) belongs to this scope."""
        return (any(fnmatch.fnmatchcase(mutant, p) for p in self.patterns())
                and not any(mutant.startswith(f"{self.module}.{f}__mutmut_")
                            for f in self.exclude))


#: The core modules: tiling and stitching, metrics, the acceptance rule, extent/CRS
#: planning and protocol validation. In ``acceptance.py`` the rule and the numbers it
#: compares (``decide``, ``eval_areas``, ``metrics_summary``); the functions that run
#: engines on rasters (``backend/learning/evaluation.py``) are covered by
#: tests/backend/learning/test_retrain.py (minutes per run). The grid planning of
#: ``grid.py`` and the band choice of ``bands.py``; opening and reading windows belong to
#: GDAL. In ``protocol/`` the framing, field checkers, rules and request validation,
#: with the message helpers; the endpoint helpers are tested with the daemon
#: (tests/backend/daemon/test_server.py). Then what turns a detection into a result
#: layer's attribute values, post-processing (masks to polygons), the daemon's token and
#: path rules, the scope of versions taught on one area, the losses and the parsing of a
#: user's corrections; the raster reading of ``corrections.py`` is covered by its
#: slower tests.
_PROTOCOL_TESTS = tuple(f"tests/protocol/test_{m}.py"
                        for m in ("framing", "checks", "rules", "schema"))
SCOPE: Tuple[Scope, ...] = (
    Scope("backend/inference/tiling.py", ("*",),
          ("tests/backend/inference/test_tiling.py",
           "tests/backend/inference/test_stitching.py")),
    Scope("protocol/metrics.py", ("*",), ("tests/protocol/test_metrics.py",)),
    Scope("backend/learning/acceptance.py", ("x_decide", "x_eval_areas", "x_metrics_summary"),
          ("tests/backend/learning/test_acceptance.py",)),
    Scope("backend/inference/grid.py", ("*",),
          ("tests/backend/inference/test_grid.py",
           "tests/backend/inference/test_stitching.py",
           "tests/backend/inference/test_bands.py")),
    Scope("backend/inference/bands.py", ("x_choose_bands", "x_alpha_band"),
          ("tests/backend/inference/test_bands.py",)),
    Scope("protocol/framing.py", ("*",), _PROTOCOL_TESTS,
          exclude=("x_parse_endpoint", "x_is_loopback", "x_new_id")),
    Scope("protocol/checks.py", ("*",), _PROTOCOL_TESTS),
    Scope("protocol/rules.py", ("*",), _PROTOCOL_TESTS),
    Scope("protocol/schema.py", ("*",), _PROTOCOL_TESTS),
    Scope("protocol/results.py", ("x_attribute_values",), ("tests/protocol/test_results.py",)),
    Scope("backend/inference/postprocess.py", ("*",),
          ("tests/backend/inference/test_postprocess.py",
           "tests/backend/inference/test_objects.py")),
    Scope("backend/daemon/access.py", ("*",), ("tests/backend/daemon/test_access.py",)),
    Scope("backend/models/area.py", ("x_build_area", "x_area_of_extents", "x_covers"),
          ("tests/backend/models/test_area.py", "tests/backend/models/test_area_choice.py")),
    Scope("backend/models/area_choice.py", ("*",),
          ("tests/backend/models/test_area_choice.py",)),
    Scope("backend/learning/losses.py", ("*",), ("tests/backend/learning/test_losses.py",)),
    Scope("backend/learning/corrections.py", ("x_parse_features", "x__polygonal", "x__inside"),
          ("tests/backend/learning/test_corrections.py",)),
)

#: Folders the tests read (the docs they check, the model folder and its defaults):
#: copied beside the mutated packages.
READ_BY_TESTS = ("docs", "models")

#: mutmut's exit codes of a mutant's test run -> this report's verdict.
KILLED_CODES = {1, 3, 24, -24, 152, 255, 36, -11, -9, 37}
SURVIVED_CODES = {0}
NO_TESTS_CODES = {5, 33}


def verdict(code: Optional[int]) -> str:
    """``killed``, ``survived``, ``no tests`` (no selected test reaches the function:
    counted as surviving) or ``not checked``."""
    if code is None:
        return "not checked"
    if code in SURVIVED_CODES:
        return "survived"
    if code in NO_TESTS_CODES:
        return "no tests"
    return "killed" if code in KILLED_CODES else f"exit {code}"


def explained_names(text: str) -> Dict[str, str]:
    """Mutant name -> reason, from the Markdown table rows of ``EXPLAINED``
    (``| `name` | reason |``)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*`([^`]+__mutmut_\d+)`\s*\|(.*)\|\s*$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def setup_cfg(scopes: Sequence[Scope]) -> str:
    """mutmut's configuration for these scopes (``[mutmut]`` of ``setup.cfg``)."""
    tests = sorted({t for s in scopes for t in s.tests})
    lines = ["[mutmut]", "source_paths =", "    backend", "    protocol", "only_mutate ="]
    lines += [f"    {s.path}" for s in scopes]
    lines += ["pytest_add_cli_args =", "    -p", "    no:cacheprovider",
              "pytest_add_cli_args_test_selection ="]
    lines += [f"    {t}" for t in tests]
    lines += ["also_copy =", *[f"    {d}" for d in READ_BY_TESTS]]
    lines += ["use_git_change_detection = false", ""]
    return "\n".join(lines)


def prepare(scopes: Sequence[Scope]) -> None:
    """A fresh work folder: links to the packages and tests mutmut copies, and its
    configuration."""
    if WORK.exists():
        shutil.rmtree(WORK)
    (WORK / "tests").mkdir(parents=True)
    for pkg in ("backend", "protocol", *READ_BY_TESTS):
        (WORK / pkg).symlink_to(REPO / pkg, target_is_directory=True)
    for shared in ("conftest.py", "support"):  # the tests' fixtures and helpers
        (WORK / "tests" / shared).symlink_to(REPO / "tests" / shared)
    for sub in sorted({Path(t).parts[1] for s in scopes for t in s.tests}):
        (WORK / "tests" / sub).symlink_to(REPO / "tests" / sub, target_is_directory=True)
    (WORK / "setup.cfg").write_text(setup_cfg(scopes))


def run_mutmut(scopes: Sequence[Scope], max_children: int) -> int:
    """``mutmut run`` over the scopes' functions, at low CPU priority; its output goes to
    ``out/mutants/mutmut.log``. Returns its exit status."""
    mutmut = Path(sys.executable).parent / "mutmut"
    patterns = [p for s in scopes for p in s.patterns()]
    env = dict(os.environ)
    env.setdefault("ORTHOLENS_MODELS", str(REPO / "models"))
    # the copy lies under out/, where the default data path (beside the repository)
    # does not exist: the tests on real data would skip and kill nothing
    env.setdefault("ORTHOLENS_DATA", str(data_dir()))
    # mutmut forks a child per mutant from a process that has run the tests: a thread
    # pool of OpenMP (torch) in the parent hangs the child at its next parallel region,
    # and the hang would count as a kill by timeout
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)   # the mutated copy, not the source, must be imported
    with open(WORK / "mutmut.log", "w") as log:
        return subprocess.call(["nice", "-n", "10", str(mutmut), "run", "--max-children",
                                str(max_children), *patterns], cwd=WORK, env=env,
                               stdout=log, stderr=subprocess.STDOUT)


def results(scopes: Sequence[Scope]) -> Dict[str, List[Tuple[str, str]]]:
    """Module path -> ``[(mutant name, verdict)]`` of the scopes' mutants, from mutmut's
    ``.meta`` files."""
    out = {}
    for s in scopes:
        meta = json.loads((WORK / "mutants" / (s.path + ".meta")).read_text())
        out[s.path] = sorted(((k, verdict(v)) for k, v in meta["exit_code_by_key"].items()
                              if s.covers(k)), key=lambda kv: _natural(kv[0]))
    return out


def _natural(name: str) -> Tuple[str, int]:
    base, _, n = name.rpartition("__mutmut_")
    return base, int(n) if n.isdigit() else 0


def diffs(names: Iterable[str]) -> Dict[str, str]:
    """The changed lines of each mutant (``mutmut show``)."""
    names = list(names)
    if not names:
        return {}
    cwd = os.getcwd()
    os.chdir(WORK)
    try:
        from mutmut.__main__ import find_mutant, get_diff_for_mutant
        out = {}
        for n in names:
            d = get_diff_for_mutant(n, path=find_mutant(n).path)
            out[n] = "\n".join(line for line in d.splitlines()
                               if line[:1] in "+-" and line[:3] not in ("+++", "---"))
        return out
    finally:
        os.chdir(cwd)


def report(res: Dict[str, List[Tuple[str, str]]], explained: Dict[str, str],
           seconds: float) -> Tuple[str, bool]:
    """The printed report and whether the run passes (at most ``MAX_SURVIVING``
    surviving, each survivor explained)."""
    rows, survivors = [], []
    total = killed = 0
    for path, items in res.items():
        k = sum(v == "killed" for _, v in items)
        lost = [(n, v) for n, v in items if v != "killed"]
        rows.append(f"  {path:<34} {len(items):>6} {k:>7} {len(lost):>9}")
        total += len(items)
        killed += k
        survivors += lost
    share = (total - killed) / total if total else 0.0
    lines = [f"mutation testing: {total} mutants, {killed} killed, {total - killed} "
             f"surviving ({100 * share:.1f} %; at most {100 * MAX_SURVIVING:.0f} % "
             f"allowed) in {seconds / 60:.1f} min",
             f"  {'module':<34} {'mutants':>6} {'killed':>7} {'survived':>9}", *rows, ""]
    unexplained = [n for n, _ in survivors if n not in explained]
    shown = diffs(n for n, _ in survivors)
    if survivors:
        lines.append("surviving mutants (why each is harmless: tools/mutants_equivalent.md):")
    for n, v in survivors:
        mark = "" if n in explained else "   <- NOT EXPLAINED"
        lines.append(f"- {n} ({v}){mark}")
        lines += [f"      {d}" for d in shown.get(n, "").splitlines()]
    # only the modules that ran (``--module``) can show an explanation to be stale
    ran = tuple(path[:-len(".py")].replace("/", ".") + "." for path in res)
    stale = sorted({n for n in explained if n.startswith(ran)} - {n for n, _ in survivors}
                   - {n for items in res.values() for n, v in items if v != "killed"})
    if stale:
        lines.append(f"\nexplained in tools/mutants_equivalent.md but killed or gone "
                     f"(remove them): {', '.join(stale)}")
    ok = total > 0 and share <= MAX_SURVIVING and not unexplained
    if unexplained:
        lines.append(f"\n{len(unexplained)} surviving mutant(s) not explained in "
                     f"tools/mutants_equivalent.md: kill them with a test, or explain why "
                     f"they are equivalent")
    return "\n".join(lines), ok


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 2,
                    help="mutants tested at once (default: the CPU count)")
    ap.add_argument("--module", action="append", default=[],
                    help="only this source file of the scope (repeatable), e.g. "
                         "protocol/metrics.py")
    args = ap.parse_args(argv)
    scopes = [s for s in SCOPE if not args.module or s.path in args.module]
    if not scopes:
        ap.error(f"no such module in the scope; choose from {[s.path for s in SCOPE]}")
    prepare(scopes)
    start = time.monotonic()
    rc = run_mutmut(scopes, args.max_children)
    seconds = time.monotonic() - start
    if rc != 0:
        print((WORK / "mutmut.log").read_text()[-3000:])
        print(f"mutmut run failed (exit status {rc}); log: {WORK / 'mutmut.log'}")
        return 1
    explained = explained_names(EXPLAINED.read_text()) if EXPLAINED.is_file() else {}
    text, ok = report(results(scopes), explained, seconds)
    print(text)
    (WORK / "report.txt").write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
