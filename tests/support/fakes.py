"""One fake predictor whose output is known everywhere, an ensemble card over the shipped
model, and predictions over the Vienna scene."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

from tests.support.common import DEFAULT_MODEL, VIENNA


# ----------------------------------------------------------------------------- predictor

class FakePredictor:
    """A predictor whose panel probability is a per-pixel function of the raw bands:
    ``p = clip(gain * mean band value / 255, 0, 1)``, background ``1 - p``.

    It commutes with every tiling and every D4 transform, so stitched, shifted and
    test-time augmented results must equal the function applied to the whole grid at
    once; ``gain=0`` sees background everywhere. With ``limit`` it fails like a device
    whose memory holds only ``limit`` tiles a call.

    Args:
        card: the model card (``channels`` = its ``num_outputs``, 2 for one class).
        gain: the factor of the mean brightness.
        limit: most tiles a call; more raise ``error()`` (None: no limit).
        error: what a call above ``limit`` raises (e.g. ``MemoryError``).
        device: the device it reports (``"cuda:0 fake"`` for a GPU that runs out).

    Attributes:
        calls: the number of tiles of each call, in order.
    """

    kind, n_members = "test", 1

    def __init__(self, card, gain: float = 1.0, limit: Optional[int] = None,
                 error: Optional[Callable[[], BaseException]] = None, device: str = "cpu"):
        self.card, self.gain, self.limit, self.device = card, gain, limit, device
        self.error = error or (lambda: MemoryError("out of memory"))
        self.calls: List[int] = []

    @property
    def channels(self) -> int:
        """Output channels: background and the card's classes."""
        return self.card.num_outputs

    def predict_raw(self, tiles):
        """uint8 (N, bands, H, W) -> float32 (N, 2, H, W): background, panel."""
        import numpy as np
        self.calls.append(len(tiles))
        if self.limit is not None and len(tiles) > self.limit:
            raise self.error()
        p = np.clip(tiles.astype(np.float32).mean(1, keepdims=True) / 255.0 * self.gain,
                    0, 1)
        return np.concatenate([1 - p, p], 1).astype(np.float32)


def ensemble_card(**kw: Any):
    """A ``backend.models.card.ModelCard`` of an ensemble ``test-ensemble`` whose one
    member is the shipped model (its classes, bands, GSD, tiling and thresholds);
    ``kw`` overrides card fields (``tta``, ``shifts``, ``members``...).

    Raises:
        protocol.errors.ModelCorrupt: fields an ensemble card may not have.
    """
    from backend.models.card import ModelCard
    from backend.models.catalog import load_card
    base = load_card(DEFAULT_MODEL).to_dict()
    d = {k: base[k] for k in ("classes", "bands", "gsd_m", "tile_size", "overlap",
                              "threshold", "min_area_m2", "simplify_m")}
    d.update({"id": "test-ensemble", "version": "0", "kind": "ensemble",
              "members": [{"id": DEFAULT_MODEL, "weight": 1.0}]})
    d.update(kw)
    return ModelCard.from_dict(d)



def predict_vienna(predictor, extent: Sequence[float], batch_size: int = 4,
                   **kw: Any) -> Tuple[Any, Any, int, Any, Any]:
    """``backend.inference.pipeline.predict_grid`` of ``predictor`` over ``extent``
    (EPSG:31256 metres) of the Vienna scene, on the grid at its card's GSD.

    Args:
        predictor: what runs the model (its ``card`` gives the GSD).
        extent: ``(xmin, ymin, xmax, ymax)``.
        batch_size: tiles per model call.
        **kw: further ``predict_grid`` arguments (``tile_size``, ``overlap``,
            ``warnings``).

    Returns:
        ``(probs, valid, n_tiles, grid, image)``: float32 (channels, H, W), bool (H, W),
        the tiles run, the grid, and the grid's pixels uint8 (3, H, W) as read.
    """
    import rasterio
    from backend.inference.grid import plan_grid
    from backend.inference.pipeline import predict_grid
    from backend.inference.raster import WindowReader
    from protocol.window import Window

    with rasterio.open(VIENNA) as ds:
        grid = plan_grid(ds, list(extent), None, predictor.card.gsd_m, 3)
        reader = WindowReader(ds, grid)
        try:
            probs, valid, n = predict_grid(reader, grid, predictor, batch_size, **kw)
            side = max(grid.width, grid.height)
            image = reader.read(Window(0, 0, side, side))[0][:, :grid.height, :grid.width]
        finally:
            reader.close()
    return probs, valid, n, grid, image
