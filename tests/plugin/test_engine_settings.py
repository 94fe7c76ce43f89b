"""The engine's settings: the token kept in QGIS's authentication database (moved there
from plain settings, ``ORTHOLENS_TOKEN`` winning, a locked database said so), where the
engine runs, the checks of the settings dialog."""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import QgsSettings

from helpers import TEST_MASTER_PASSWORD


@pytest.fixture
def no_token(qgis_auth, monkeypatch):
    """No token anywhere before and after the test (settings, auth database, env)."""
    from plugin.settings import forget_token

    monkeypatch.delenv("ORTHOLENS_TOKEN", raising=False)
    forget_token()
    yield qgis_auth
    forget_token()


def _plain_settings_text() -> str:
    QgsSettings().sync()
    return Path(QgsSettings().fileName()).read_text(errors="replace")


def test_the_token_lives_encrypted_in_the_auth_database(no_token):
    from plugin.settings import (TOKEN_AUTH_NAME, TOKEN_FROM_AUTH, daemon_settings,
                                 forget_token, store_token, token_is_stored)

    assert daemon_settings().token is None and not token_is_stored()
    assert store_token("tok-3f9a-secret") is None
    cfg_id = QgsSettings().value("ortholens/token_authcfg", "")
    assert cfg_id in no_token.configIds()
    assert no_token.availableAuthMethodConfigs()[cfg_id].name() == TOKEN_AUTH_NAME
    s = daemon_settings()
    assert s.token == "tok-3f9a-secret" and s.token_source == TOKEN_FROM_AUTH
    assert "tok-3f9a-secret" not in _plain_settings_text()
    # storing again updates the same config
    assert store_token("tok-2") is None
    assert QgsSettings().value("ortholens/token_authcfg", "") == cfg_id
    assert daemon_settings().token == "tok-2"
    forget_token()
    assert cfg_id not in no_token.configIds() and daemon_settings().token is None


def test_a_plain_token_of_an_earlier_version_is_moved(no_token, qgis_iface):
    import plugin
    from plugin.settings import daemon_settings

    QgsSettings().setValue("ortholens/token", "legacy-77")
    p = plugin.classFactory(qgis_iface)
    p.initGui()  # moves it at load
    try:
        assert QgsSettings().value("ortholens/token", "") == ""
        assert "legacy-77" not in _plain_settings_text()
        assert daemon_settings().token == "legacy-77"
    finally:
        p.unload()
    # also when read before any load
    QgsSettings().setValue("ortholens/token", "legacy-78")
    assert daemon_settings().token == "legacy-78"
    assert QgsSettings().value("ortholens/token", "") == ""


def test_the_environment_wins_and_a_locked_database_is_said(no_token, monkeypatch):
    from plugin.settings import TOKEN_FROM_ENV, daemon_settings, store_token

    assert store_token("stored") is None
    monkeypatch.setenv("ORTHOLENS_TOKEN", "from-env")
    s = daemon_settings()
    assert s.token == "from-env" and s.token_source == TOKEN_FROM_ENV
    monkeypatch.delenv("ORTHOLENS_TOKEN")
    no_token.clearMasterPassword()  # as after a QGIS start, nobody gave it yet
    try:
        s = daemon_settings()
        assert s.token is None and "master password" in s.token_problem
        assert "QGIS_AUTH_PASSWORD_FILE" in s.token_problem
    finally:
        assert no_token.setMasterPassword(TEST_MASTER_PASSWORD, True)
    assert daemon_settings().token == "stored"


def test_where_the_engine_runs():
    from plugin.settings import DaemonSettings

    def at(endpoint):
        return DaemonSettings(endpoint=endpoint, python=None, repo=None, token=None)

    for local in ("tcp://127.0.0.1:5591", "tcp://127.0.0.2:7000", "tcp://localhost:1",
                  "tcp://[::1]:5591"):
        assert not at(local).is_remote() and at(local).where() == "on this computer"
    for remote in ("tcp://10.0.0.5:5591", "tcp://gpu.example.org:5591",
                   "tcp://[2001:db8::1]:5591"):
        assert at(remote).is_remote(), remote
    assert at("tcp://10.0.0.5:5591").where() == "on 10.0.0.5 (remote)"
    assert not at("not an endpoint").is_remote()


def test_dialog_checks_a_remote_engine_has_a_token():
    from plugin.settings_dialog import check_values

    remote = {"endpoint": "tcp://10.0.0.5:5591"}
    assert any("needs" in p or "token" in p for p in check_values(remote))
    assert check_values(remote, token_kept=True) == []
    assert check_values(dict(remote, token="t0k")) == []
    assert check_values({"endpoint": "tcp://127.0.0.2:5591"}) == []
    assert any("256" in p for p in check_values({"token": "x" * 257}))
    assert any("printable" in p for p in check_values({"token": "a\nb"}))
