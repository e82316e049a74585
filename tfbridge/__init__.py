"""tfbridge: legacy Keras (TF 1.13 / 1.15) and TF 2.x models to fully int8 TFLite with int8 I/O for NPUs,
with parity checks across TensorFlow versions.

    tfbridge.convert_legacy(model, calib=..., **options) -> Report    (tfbridge convert-legacy)
    tfbridge.verify_upgrade(model, **options) -> Report               (tfbridge verify-upgrade)
    tfbridge.convert(model, calib=..., **options) -> Report           (tfbridge convert)
    tfbridge.npu_check(path, targets=[...]) -> NpuReadiness           (tfbridge npu)
    tfbridge.fleet(manifest, out, shard=None, jobs=None) -> FleetReport  (tfbridge fleet; docs/fleet.md)
    from tfbridge.inprocess import to_int8                            (a live Keras model, your own TF 2.x)

The host API imports neither TensorFlow nor numpy (``tfbridge.api``); errors are ``tfbridge.errors``
classes. docs/api.md shows each with an example.
"""

__version__ = "0.1.0"

from tfbridge.api import convert, convert_legacy, fleet, npu_check, verify_upgrade  # noqa: E402,F401
from tfbridge.errors import TfbridgeError  # noqa: E402,F401
from tfbridge.report import (FleetModel, FleetReport, Int8Figures, NpuReadiness, NpuTarget,  # noqa: E402,F401
                             ParityCell, Report)
