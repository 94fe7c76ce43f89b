"""*Add model…* in the dock: a file dialog, the ``import_model`` request, and the dialog
that asks for the metadata the file lacks (prefilled with Deepness's defaults) before
the request is sent again; the Processing algorithm ``ortholens:importmodel``; a retrain
of an imported model refused in the plugin."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from helpers import wait_until
from protocol.errors import DaemonError, InputError
from protocol.importing import DEEPNESS_DEFAULTS, missing_message

PATH = "/models/roads.onnx"
CARD = {"id": "roads", "version": "1.0.0+abcd", "gsd_m": 0.03, "format": "deepness",
        "classes": [{"id": 1, "name": "road"}], "imported": {"file": "roads.onnx"}}


class ImportingClient:
    """A stand-in engine: an ``import_model`` without values lacks the metadata
    ``missing`` (when there is any), one with values gives :data:`CARD`; it records
    every request's parameters."""

    process = None

    def __init__(self, missing: List[str]):
        self.missing = missing
        self.requests: List[Any] = []

    def import_model(self, params) -> Dict[str, Any]:
        self.requests.append(params)
        if params.values is None and self.missing:
            raise DaemonError(missing_message(self.missing, "roads.onnx"),
                              "invalid_input", field="values")
        return dict(CARD)

    def models(self) -> List[Dict[str, Any]]:
        return [dict(CARD)]

    def close(self) -> None:
        pass


@pytest.fixture
def plugin(qgis_iface, monkeypatch):
    from plugin import tasks
    from plugin.main import OrtholensPlugin
    client = ImportingClient(["model_type", "resolution", "tiles_overlap", "seg_thresh",
                              "seg_small_segment"])
    monkeypatch.setattr(tasks, "connect_daemon", lambda *a, **k: client)
    p = OrtholensPlugin(qgis_iface)
    p.initGui()
    p.client = client
    yield p
    p.unload()


def test_add_model_asks_for_missing_metadata_and_sends_it(plugin):
    from plugin.importing.dialog import MetadataDialog
    shown: List[MetadataDialog] = []

    def accept(dlg: MetadataDialog) -> bool:
        shown.append(dlg)
        # Deepness's defaults are filled in; the user changes the resolution
        assert set(dlg.editors) == {"model_type", "resolution", "tiles_overlap",
                                    "seg_thresh", "seg_small_segment"}
        assert dlg.values() == {k: DEEPNESS_DEFAULTS[k] for k in dlg.editors}
        dlg.editors["resolution"].setValue(10.0)
        return True

    importer = plugin.importer
    importer.ask_file = lambda: PATH
    importer.exec_dialog = accept
    assert plugin.dock.models.add_model_button.text() == "Add model…"
    plugin.dock.models.add_model_button.click()
    assert wait_until(lambda: len(plugin.client.requests) == 2 and importer.task is None,
                      30)
    first, second = plugin.client.requests
    assert first.path == PATH and first.values is None
    assert len(shown) == 1
    assert second.path == PATH and second.values.resolution == 10.0
    assert second.values.model_type == "Segmentor" and second.values.seg_small_segment == 7
    assert wait_until(lambda: plugin.dock.models.current_model_id() == "roads", 15)
    assert "Imported from roads.onnx" in plugin.dock.models.model_info.text()


def test_a_refused_dialog_sends_nothing_more(plugin):
    importer = plugin.importer
    importer.ask_file = lambda: PATH
    importer.exec_dialog = lambda dlg: False
    importer.add_model()
    assert wait_until(lambda: importer.task is None and plugin.client.requests, 30)
    assert len(plugin.client.requests) == 1
    importer.ask_file = lambda: ""  # the file dialog cancelled: nothing is sent
    assert importer.add_model() is None and len(plugin.client.requests) == 1


def test_other_refusals_are_shown_as_the_engine_words_them(plugin):
    def refuse(params):
        raise DaemonError("the model is a Deepness Detector: Ortholens runs segmentation "
                          "models (model_type Segmentor) only", "invalid_input",
                          field="path")
    plugin.client.import_model = refuse
    importer = plugin.importer
    importer.ask_file = lambda: PATH
    importer.exec_dialog = lambda dlg: pytest.fail("no dialog for this refusal")
    task = importer.add_model()
    assert wait_until(lambda: importer.task is None, 30)
    assert "Deepness Detector" in task.error and not task.missing
    assert "Deepness Detector" in plugin.dock.detection.message_label.text()


def test_the_dialog_shows_only_what_it_can_ask(qgis_iface):
    from plugin.importing.dialog import MetadataDialog
    dlg = MetadataDialog(["resolution", "class_names"], "m.onnx")
    assert list(dlg.editors) == ["resolution"] and dlg.values() == {"resolution": 3.0}


def test_imported_models_are_not_retrained_from_the_dock():
    from plugin.retrain.controller import RetrainController
    with pytest.raises(InputError, match="needs PyTorch weights"):
        RetrainController.model_for(CARD)


def test_processing_import_algorithm(qgis_app, monkeypatch):
    from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback

    from plugin.processing import common
    from plugin.processing.import_alg import ImportModelAlgorithm
    client = ImportingClient(["resolution"])
    monkeypatch.setattr(common, "connect", lambda feedback=None, timeout_s=10.0: client)
    alg = ImportModelAlgorithm()
    alg.initAlgorithm()
    ctx, fb = QgsProcessingContext(), QgsProcessingFeedback()
    with pytest.raises(QgsProcessingException, match="values for resolution"):
        alg.processAlgorithm({"INPUT": PATH}, ctx, fb)
    out = alg.processAlgorithm({"INPUT": PATH, "RESOLUTION": 10.0, "THRESHOLD": 0.4}, ctx, fb)
    assert out == {"MODEL": "roads", "CLASSES": "road"}
    assert client.requests[-1].values.resolution == 10.0
    assert client.requests[-1].values.seg_thresh == 0.4
    # a MODEL parameter may be the path of an ONNX file: it is added first, or the
    # message says how to give what it lacks
    with pytest.raises(QgsProcessingException, match="ortholens:importmodel"):
        common.resolve_model(client, PATH)
    assert common.resolve_model(ImportingClient([]), PATH) == "roads"
    # ortholens:detect: a path is imported, an id passes, empty lets the engine choose
    assert common.given_model(ImportingClient([]), f" {PATH} ") == "roads"
    assert common.given_model(client, "pv-unet-efl0") == "pv-unet-efl0"
    assert common.given_model(client, "  ") is None
