"""Models: what a model is and where it lives. :mod:`~backend.models.card` parses and
writes the model card (every field typed, with :mod:`~backend.models.record`),
:mod:`~backend.models.catalog` lists the shipped models and user versions and names the
default per device, :mod:`~backend.models.versions` stores fine-tuned versions with
lineage and rollback (:mod:`~backend.models.version_writer` writes them,
:mod:`~backend.models.pending` keeps candidates the rule did not accept), a version's
area (:mod:`~backend.models.area`) decides where detection uses it
(:mod:`~backend.models.area_choice`), :mod:`~backend.models.tracking` writes retrain
runs in MLflow's file format, :mod:`~backend.models.torch_models` builds PyTorch modules
by name and reads and writes their weights, :mod:`~backend.models.export` turns weights
into ONNX, and :mod:`~backend.models.markdown` renders a card as a human-readable
MODEL_CARD.md. It imports nothing of the inference, learning or daemon layers.
"""
