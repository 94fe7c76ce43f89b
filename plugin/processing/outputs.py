"""Processing outputs that come back as the dock's results do: written to the results
folder unless the user chose another file, added to the map styled by class, named
like the dock's result layers (:func:`~..layers.naming.result_layer_name`), with what
produced them in their metadata.

Processing loads an algorithm's output layers itself once it has finished, on the UI
thread; :class:`ResultStyler`, a layer post-processor, styles and names them there.
QGIS keeps only a C++ pointer to a post-processor, so each one is kept alive here
(:data:`_ALIVE`) until it has run.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputLayerDefinition,
    QgsProject,
    QgsProperty,
)

from ..detect.task import ran_with, record_run
from ..layers.load import style_result_layer
from ..layers.naming import (default_result_path, next_result_run, record_result_run,
                             result_layer_name)
from ..settings import results_dir

#: Post-processors waiting for their layer (QGIS does not own them).
_ALIVE: List["ResultStyler"] = []


class ResultStyler(QgsProcessingLayerPostProcessorInterface):
    """Styles and names a batch job's result layer once Processing has loaded it.

    Args:
        card: the model card that ran (classes, id, version, threshold).
        stats: what the run reports (``threshold``, ``min_area_m2``; may be empty).
        source_name: the name of the raster layer detected in.

    Attributes:
        name: the name given to the layer (after it was loaded), else ``""``.
    """

    def __init__(self, card: Dict[str, Any], stats: Dict[str, Any], source_name: str):
        super().__init__()
        self.card, self.stats, self.source_name = dict(card), dict(stats), source_name
        self.name = ""

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 - QGIS API
        """Style ``layer`` by class with the project's next run's outline, name it and
        record the run (UI thread)."""
        project = context.project() or QgsProject.instance()
        run = next_result_run(project)
        style_result_layer(layer, list(self.card.get("classes") or []), run)
        thr, _ = ran_with(self.card, self.stats)
        self.name = result_layer_name(str(self.card.get("id", "ortholens")),
                                      self.card.get("version"), self.source_name, run,
                                      threshold=thr, batch=True)
        layer.setName(self.name)
        record_run(layer, self.card, self.stats)
        record_result_run(run, project)
        if self in _ALIVE:
            _ALIVE.remove(self)


def results_file(stem: str, context: QgsProcessingContext) -> str:
    """A new GeoPackage path in the results folder (the one the user chose in the
    settings, else the project's folder, else the profile's; see
    :func:`~..layers.naming.default_result_path`)."""
    return default_result_path(stem, project=context.project() or QgsProject.instance(),
                               folder=results_dir())


def is_temporary(value: Any) -> bool:
    """True when an output parameter's value leaves the file to Processing (a temporary
    layer): the result then goes to the results folder instead."""
    if isinstance(value, QgsProcessingOutputLayerDefinition):
        value = value.sink.staticValue()
    return value in (None, "") or str(value).startswith(("TEMPORARY_OUTPUT", "memory:"))


def to_file(value: Any, path: str) -> QgsProcessingOutputLayerDefinition:
    """The output parameter ``value`` pointed at ``path`` (its "open after running"
    choice kept)."""
    out = QgsProcessingOutputLayerDefinition(value) if isinstance(
        value, QgsProcessingOutputLayerDefinition) else QgsProcessingOutputLayerDefinition()
    out.sink = QgsProperty.fromValue(path)
    return out


def load_when_done(context: QgsProcessingContext, uri: str, output: str,
                   styler: ResultStyler, project: Optional[QgsProject] = None) -> None:
    """Have Processing load ``uri`` into ``project`` when the algorithm has finished and
    ``styler`` style it (a file the algorithm wrote itself, not through a sink)."""
    details = QgsProcessingContext.LayerDetails(output, project or context.project(),
                                                output)
    details.setPostProcessor(styler)
    _ALIVE.append(styler)
    context.addLayerToLoadOnCompletion(uri, details)


def style_when_done(context: QgsProcessingContext, dest: str, styler: ResultStyler) -> bool:
    """Have ``styler`` style the sink output ``dest`` Processing loads when done; False
    when it will not be loaded (the user unchecked "open output file")."""
    if not context.willLoadLayerOnCompletion(dest):
        return False
    _ALIVE.append(styler)
    context.layerToLoadOnCompletionDetails(dest).setPostProcessor(styler)
    return True


__all__ = ["ResultStyler", "results_file", "is_temporary", "to_file", "load_when_done",
           "style_when_done"]
