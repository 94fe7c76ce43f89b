"""Learning: training a model from scratch on the pv01 data
(:mod:`~backend.learning.train`) and retraining one on the user's corrections
(:mod:`~backend.learning.retrain`, the daemon's ``retrain`` job: corrections, fine-tune,
gate, register). Both share the data sets (:mod:`~backend.learning.data`: pv01 tiles,
the guard and replay sets), the augmentation (:mod:`~backend.learning.augment`), the
losses (:mod:`~backend.learning.losses`) and the optimisation loop
(:mod:`~backend.learning.optim`). For a retrain, :mod:`~backend.learning.reviewed` and
:mod:`~backend.learning.corrections` turn the reviewed areas and corrected polygons into
training data (:mod:`~backend.learning.mistakes`: where the model was wrong),
:mod:`~backend.learning.samplers` draw the chips :mod:`~backend.learning.finetune` trains
on within the plan of :mod:`~backend.learning.time_plan`, and
:mod:`~backend.learning.evaluation` and :mod:`~backend.learning.acceptance` decide
whether the candidate becomes a new version. It builds on the models and inference
layers and is used by the daemon and the tools.
"""
