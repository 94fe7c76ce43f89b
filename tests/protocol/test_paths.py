"""protocol.paths: the engine's and the model versions' folders, on both sides."""

from __future__ import annotations

import sys

import pytest

from protocol.paths import user_data_dir


@pytest.mark.skipif(sys.platform == "win32", reason="the XDG layout is not Windows'")
def test_variable_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("ORTHOLENS_TEST_DIR", str(tmp_path / "given"))
    assert user_data_dir("models", "ORTHOLENS_TEST_DIR") == (tmp_path / "given").resolve()
    monkeypatch.delenv("ORTHOLENS_TEST_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert user_data_dir("engine", "ORTHOLENS_TEST_DIR") == \
        (tmp_path / "xdg" / "ortholens" / "engine").resolve()
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_data_dir("models", "ORTHOLENS_TEST_DIR") == \
        (tmp_path / "home" / ".local" / "share" / "ortholens" / "models").resolve()


def test_both_sides_use_it(monkeypatch, tmp_path):
    """The plugin's engine folder and the engine's model versions sit side by side."""
    from backend.models.versions import user_models_dir
    from plugin.install.locate import engine_home
    monkeypatch.delenv("ORTHOLENS_USER_MODELS", raising=False)
    monkeypatch.delenv("ORTHOLENS_ENGINE_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert engine_home().parent == user_models_dir().parent == (tmp_path / "ortholens").resolve()
