"""Int8 accuracy recovery: rewrites that make the int8 model better without changing what runs on the NPU.

For whom: the int8 conversion step (``converters.tf2.calibrate`` calls ``search.search``); ``tf2``
environment only. One module per rewrite, each stating the invariant it keeps (as tf2onnx's
``optimizer/`` package): ``equalize`` (cross-layer equalization), ``bias`` (bias correction), ``ranges``
(activation ranges chosen), ``rounding`` (GPTQ rounding of int8 weights), ``empirical`` (bias correction
layer by layer on the int8 model); ``statistics`` observes the float model, ``graph`` reads and edits a TFLite
flatbuffer in place, ``search`` builds, scores and chooses. docs/recovery.md is the
user's view.
"""
