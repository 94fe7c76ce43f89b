"""``OrtholensProvider``: the algorithms of the Ortholens Processing provider."""

from __future__ import annotations

from typing import Callable, List

from qgis.PyQt.QtGui import QIcon
from qgis.core import QgsProcessingAlgorithm, QgsProcessingProvider

from ..settings import resource_path

#: Factories (no-argument callables returning a new ``QgsProcessingAlgorithm``) added by
#: :func:`register_algorithm`, loaded after the built-in algorithms.
_EXTRA: List[Callable[[], QgsProcessingAlgorithm]] = []


def register_algorithm(factory: Callable[[], QgsProcessingAlgorithm]) -> None:
    """Add an algorithm to every provider loaded from now on (and refresh the loaded
    ones with ``provider.refreshAlgorithms()``)."""
    if factory not in _EXTRA:
        _EXTRA.append(factory)


def builtin_algorithms() -> List[QgsProcessingAlgorithm]:
    """A new instance of each Ortholens algorithm (imported here, when the provider
    loads, so that registering the provider stays cheap)."""
    from .chips_alg import ExportChipsAlgorithm
    from .detect_alg import DetectObjectsAlgorithm
    from .evaluate_alg import EvaluateAlgorithm
    from .import_alg import ImportModelAlgorithm
    from .inventory_alg import SolarInventoryAlgorithm
    from .jobs_alg import BatchJobsAlgorithm
    from .rank_alg import RankForReviewAlgorithm
    from .retrain_alg import RetrainAlgorithm
    return [DetectObjectsAlgorithm(), EvaluateAlgorithm(), ExportChipsAlgorithm(),
            BatchJobsAlgorithm(), RetrainAlgorithm(), SolarInventoryAlgorithm(),
            ImportModelAlgorithm(), RankForReviewAlgorithm()]


class OrtholensProvider(QgsProcessingProvider):
    """Processing provider ``ortholens``."""

    def id(self) -> str:  # noqa: A003 - QGIS API
        return "ortholens"

    def name(self) -> str:
        return "Ortholens"

    def longName(self) -> str:  # noqa: N802
        return "Ortholens: object detection in orthophotos"

    def icon(self) -> QIcon:
        return QIcon(resource_path("icon.svg"))

    def loadAlgorithms(self) -> None:  # noqa: N802
        """Add the built-in algorithms, then those of :func:`register_algorithm`."""
        for alg in builtin_algorithms() + [f() for f in _EXTRA]:
            self.addAlgorithm(alg)
