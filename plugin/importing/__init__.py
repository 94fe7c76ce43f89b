"""Bring your own model: the dock's *Add model…* (an ONNX file in Deepness's format
becomes one of the engine's models).

* :mod:`.dialog`     the dialog that asks for the metadata a file lacks, prefilled with
  Deepness's defaults (``protocol.importing.DEEPNESS_DEFAULTS``);
* :mod:`.controller` the file dialog, the ``import_model`` request in a ``QgsTask``, the
  metadata dialog when the engine says what is missing, and the dock's model list
  afterwards.

The Processing algorithm ``ortholens:importmodel`` does the same without dialogs
(:mod:`..processing.import_alg`).
"""
