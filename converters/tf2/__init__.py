"""Code that runs only in the ``tf2`` environment (Python 3.11, TensorFlow 2.x, tf-keras, Keras 3, LiteRT):
the int8 conversion step, running .tflite models, NPU readiness, per-layer quantization error, reports.

Python 3.11 syntax is allowed here; the TF 1.x environments never import this package.
"""
