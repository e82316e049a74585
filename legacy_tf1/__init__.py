"""Code that runs inside the TF 1.x environments (tf1.13, tf1.15; Python 3.7).

Entry point: ``python -m legacy_tf1 COMMAND ...`` (see ``legacy_tf1.__main__``):

- ``inspect MODEL``            what a legacy ``.h5`` is (Keras flavour, version, Lambda/custom layers), as JSON
- ``resave MODEL --out RUN``   load in the origin environment, re-save, freeze, probe, reference outputs
- ``activations RUN --out F``  per-layer outputs on the probe (for the first-divergent-layer search)
- ``zoo NAME --out F.h5``      build a model of the legacy zoo (rcmalli keras-vggface, small CNNs)
- ``make-demo --out DIR``      train the demo face classifier on scikit-image's lfw_subset

Version-specific TF/Keras symbols live only in ``legacy_tf1.compat``.
"""
