"""The dock's progress line keeps counting: a running job's message says its elapsed
time and time left again every second, not only when the engine reports. The test
moves the time-left clock and fires the one-second timer itself."""

from __future__ import annotations

from helpers import flush_deletes


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
        ticker = dock.detection.ticker
        assert ticker.isActive() and ticker.interval() == 1000
        clock[0] += 65
        ticker.timeout.emit()  # a second later
        assert dock.detection.message() == ("training: step 3/40 — 1 min 05 s elapsed, "
                                            "about 50 s left")
        dock.detection.show_message("Retrain cancelled.")
        clock[0] += 10
        ticker.timeout.emit()
        assert dock.detection.message() == "Retrain cancelled."
        assert not ticker.isActive()
    finally:
        dock.deleteLater()
        flush_deletes()
