"""The one exception family: one shape, stable codes, and the codes the daemon sends."""

from __future__ import annotations

import inspect

import pytest

import protocol.errors as E

CLASSES = [c for _, c in inspect.getmembers(E, inspect.isclass)
           if issubclass(c, E.OrtholensError)]


def test_every_error_is_an_ortholens_error_with_a_known_default_code():
    assert len(CLASSES) >= 12
    codes = set(E.ERROR_CODES) | {E.E_CANCELLED, E.E_UNAVAILABLE, E.E_SETUP}
    for cls in CLASSES:
        exc = cls("a sentence for the user")
        assert str(exc) == exc.message == "a sentence for the user", cls
        assert exc.code in codes, cls


@pytest.mark.parametrize("cls", CLASSES)
def test_every_error_takes_message_then_code(cls):
    exc = cls("no such raster", E.E_NOT_FOUND)
    assert (exc.message, exc.code) == ("no such raster", E.E_NOT_FOUND)


def test_default_codes_say_what_went_wrong():
    assert E.ProtocolError("x").code == E.E_BAD_REQUEST
    assert E.InputError("x").code == E.E_INVALID_INPUT
    assert E.CorrectionsError("x").code == E.E_INVALID_INPUT
    assert E.ModelNotFound("x").code == E.E_NOT_FOUND
    assert E.ModelCorrupt("x").code == E.E_INVALID_INPUT
    assert E.JobCancelled().code == E.E_CANCELLED
    assert E.DaemonUnavailable("x").code == E.E_UNAVAILABLE
    assert E.JobError("x").code == E.E_INTERNAL
    err = E.EngineSetupError("pip failed", package="onnxruntime==1.32.0",
                             command="python -m pip install x", log_path="/tmp/setup.log")
    assert err.code == E.E_SETUP and err.package == "onnxruntime==1.32.0"
    assert err.command == "python -m pip install x" and err.log_path == "/tmp/setup.log"


def test_errors_keep_the_builtin_bases_callers_catch():
    assert isinstance(E.InputError("x"), ValueError)
    assert isinstance(E.ModelNotFound("x"), LookupError)
    assert isinstance(E.CorrectionsError("x"), E.InputError)
    exc = E.DaemonError("job failed", E.E_BUSY, job_id="j1")
    assert (exc.code, exc.job_id) == (E.E_BUSY, "j1")
    assert E.JobCancelled(job_id="j2").job_id == "j2"


def test_an_error_may_name_the_request_field_at_fault():
    assert E.InputError("x").field is None
    exc = E.InputError("file missing", E.E_NOT_FOUND, field="source")
    assert (exc.code, exc.field) == (E.E_NOT_FOUND, "source")
    exc = E.DaemonError("outside the roots", E.E_FORBIDDEN, None, field="source")
    assert exc.field == "source" and exc.job_id is None


def test_codes_sent_in_error_replies_exclude_the_callers_own():
    assert E.E_CANCELLED not in E.ERROR_CODES and E.E_UNAVAILABLE not in E.ERROR_CODES
    assert len(set(E.ERROR_CODES)) == len(E.ERROR_CODES) == 8
