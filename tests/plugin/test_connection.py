"""The plugin's connection to the engine: the engine's errors as sentences a user can
act on."""

from __future__ import annotations


def test_a_file_the_engine_cannot_read_is_explained():
    """Processing's batch jobs read files on the engine's computer: an engine that may
    not or cannot read the raster says where it must be, and what sends pixels."""
    from plugin.connection import describe_error, source_unreadable
    from protocol.errors import DaemonError

    outside = DaemonError("the raster path is outside the folders this daemon may read "
                          "(ORTHOLENS_ROOTS)", "forbidden", field="source")
    assert source_unreadable(outside)
    text = describe_error(outside)
    assert "ORTHOLENS_ROOTS" in text and "Detect in extent" in text
    assert "Detect in extent" not in describe_error(outside, "retrain")
    assert source_unreadable(DaemonError("raster file not found on the engine's computer",
                                         "not_found", "job1", field="source"))
    assert not source_unreadable(DaemonError("no model 'x'", "not_found", "job1"))
    assert not source_unreadable(DaemonError("missing or wrong token", "forbidden",
                                             field="token"))
