"""Code that runs inside every TensorFlow environment (tf1.13, tf1.15, tf2): Python 3.7 compatible,
numpy at import time, TensorFlow and Keras imported lazily inside functions.

metrics (the one comparison helper), preprocess (presets as in training), calibration (calibration and
probe data), keras_compat (loading a re-saved .h5 with a chosen Keras), parity (one parity cell).
The host never imports this package (it has no numpy); tests/unit/test_layout.py keeps it so.
"""
