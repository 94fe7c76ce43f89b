"""The dock's progress line keeps counting: a running job's message says its elapsed
time and time left again every second, not only when the engine reports."""

from __future__ import annotations

from helpers import flush_deletes, wait_until


def test_progress_message_ticks_until_another_message(qgis_iface):
    from plugin.dock.panel import OrtholensDock
    from plugin.timeleft import TimeLeft

    clock = [100.0]
    tl = TimeLeft(lambda: clock[0])
    dock = OrtholensDock(qgis_iface.mainWindow())
    try:
        dock.set_busy(True)
        dock.detection.show_progress("training: step 3/40 — about 50 s left", tl)
        assert dock.detection.message() == ("training: step 3/40 — 0 s elapsed, about 50 s "
                                            "left")
        clock[0] += 65
        assert wait_until(lambda: "1 min 05 s elapsed" in dock.detection.message(), 3)
        dock.detection.show_message("Retrain cancelled.")
        clock[0] += 10
        assert not wait_until(lambda: "elapsed" in dock.detection.message(), 1.5)
    finally:
        dock.deleteLater()
        flush_deletes()
