"""Learning: training a model from scratch on the pv01 data
(:mod:`~backend.learning.train`) and fine-tuning one on the user's corrections
(:mod:`~backend.learning.finetune`, the daemon's ``retrain`` job). Both share the data
sets (:mod:`~backend.learning.data`: pv01 tiles, the guard and replay sets), the
augmentation (:mod:`~backend.learning.augment`), the losses
(:mod:`~backend.learning.losses`) and the optimisation loop
(:mod:`~backend.learning.optim`); :mod:`~backend.learning.corrections` turns corrected
polygons into training data and :mod:`~backend.learning.acceptance` decides whether a
fine-tuned candidate becomes a new version. It builds on the models and inference
layers and is used by the daemon and the tools.
"""
