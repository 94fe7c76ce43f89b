"""ImageNet encoder weights from a registry package map correctly onto timm: the mapped
network names a natural photo as ImageNet does, and an encoder that is not the same
architecture is refused."""

from __future__ import annotations

import numpy as np
import pytest

from backend.learning.pretrained import init_encoder, timm_state_dict, weights_file
from protocol.errors import ModelCorrupt, ModelNotFound

#: ImageNet-1k class 652, "military uniform": what ImageNet classifiers answer for the
#: portrait of Grace Hopper in uniform shipped with matplotlib (a classic of the
#: TensorFlow and Keras tutorials).
MILITARY_UNIFORM = 652
#: EfficientNet-Lite's input scaling: (x - 127) / 128 (TensorFlow TPU reference).
LITE_MEAN, LITE_STD = 127.0, 128.0


def _grace_hopper(size: int = 224) -> np.ndarray:
    """The matplotlib sample photo, centre-cropped and resized: float32 (1, 3, size, size)."""
    import matplotlib.cbook as cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = Image.open(f).convert("RGB")
    w, h = img.size
    side = min(w, h)
    img = img.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
    x = np.asarray(img.resize((size, size), Image.BICUBIC), np.float32)
    return ((x - LITE_MEAN) / LITE_STD).transpose(2, 0, 1)[None]


def test_mapped_weights_classify_a_natural_photo_as_imagenet_does():
    import timm
    import torch

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(timm_state_dict("efficientnet-lite0"), strict=True)
    model.eval()
    with torch.inference_mode():
        logits = model(torch.from_numpy(_grace_hopper()))
    top5 = torch.topk(logits[0], 5).indices.tolist()
    assert top5[0] == MILITARY_UNIFORM, top5
    # a randomly initialised network answers anything: the mapping is what names it
    rand = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    with torch.inference_mode():
        assert int(rand(torch.from_numpy(_grace_hopper())).argmax()) != MILITARY_UNIFORM


def test_segmentation_encoder_gets_every_pretrained_tensor():
    import segmentation_models_pytorch as smp
    import torch

    model = smp.Unet("tu-efficientnet_lite0", encoder_weights=None, classes=2,
                     decoder_channels=(128, 64, 32, 16, 8))
    n = init_encoder(model, "efficientnet-lite0")
    assert n == len(model.encoder.model.state_dict())
    ref = timm_state_dict("efficientnet-lite0")
    got = model.encoder.model.state_dict()
    assert torch.equal(got["conv_stem.weight"], ref["conv_stem.weight"])
    assert torch.equal(got["blocks.6.0.bn3.running_var"], ref["blocks.6.0.bn3.running_var"])


def test_other_architectures_and_unknown_names_are_refused():
    import segmentation_models_pytorch as smp

    with pytest.raises(ModelCorrupt, match="not efficientnet_lite0"):
        init_encoder(smp.Unet("tu-resnet18", encoder_weights=None, classes=2),
                     "efficientnet-lite0")
    with pytest.raises(ModelNotFound, match="known"):
        weights_file("efficientnet-b7")
    assert weights_file("efficientnet-lite0").suffix == ".pth"
