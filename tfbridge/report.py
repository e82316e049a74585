"""What the Python API returns: a run's ``report.json`` as typed dataclasses.

``Report.read(run_dir)`` reads any run folder (convert_legacy, verify_upgrade, convert); the fields are
report.json's keys that other tools rely on (DESIGN.md, "report.json"), the rest stays in ``raw``.
Standard library only, Python 3.7 compatible.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional


@dataclasses.dataclass
class ParityCell:
    """One environment's float outputs against the origin's (``status``: match | mismatch | load_error)."""

    env: str
    label: str
    status: str
    runtime: Optional[str] = None
    max_abs: Optional[float] = None
    cosine: Optional[float] = None
    top1_agreement: Optional[float] = None
    tolerated: bool = False
    error: Optional[str] = None
    hint: Optional[str] = None

    @classmethod
    def from_json(cls, data):
        runtime = data.get("runtime")
        if isinstance(runtime, dict):
            runtime = " + ".join("%s %s" % item for item in sorted(runtime.items()) if item[1])
        return cls(env=data.get("env"), label=data.get("label") or data.get("env"), status=data.get("status"),
                   runtime=runtime, max_abs=data.get("max_abs"), cosine=data.get("cosine"),
                   top1_agreement=data.get("top1_agreement"), tolerated=bool(data.get("tolerated")),
                   error=data.get("error"), hint=data.get("hint"))


@dataclasses.dataclass
class Int8Figures:
    """The int8 model against the float references on the probe (``status``: match | mismatch | ...)."""

    path: Optional[str]
    status: Optional[str]
    input_dtype: Optional[str] = None
    output_dtype: Optional[str] = None
    size_bytes: Optional[int] = None
    cosine: Optional[float] = None
    top1_agreement: Optional[float] = None
    max_abs_lsb: Optional[float] = None
    sqnr_db: Optional[float] = None

    @classmethod
    def from_json(cls, data, run_dir):
        # report.json's own path names the staging folder the step wrote in; the file is in the run folder
        path = os.path.join(run_dir, "model_int8.tflite")
        path = path if os.path.exists(path) else None
        return cls(path=path, status=data.get("status"), input_dtype=data.get("input_dtype"),
                   output_dtype=data.get("output_dtype"), size_bytes=data.get("size_bytes"),
                   cosine=data.get("cosine"), top1_agreement=data.get("top1_agreement"),
                   max_abs_lsb=data.get("max_abs_lsb"), sqnr_db=data.get("sqnr_db"))


@dataclasses.dataclass
class NpuTarget:
    """One ``--npu-target``: which ops its compiler (Vela, the VX delegate's rules) leaves on the CPU."""

    target: str
    compiler: Optional[str] = None
    ops_on_npu: Optional[int] = None
    ops_on_cpu: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    npu_ops_fraction: Optional[float] = None
    estimated_ms: Optional[float] = None

    @classmethod
    def from_json(cls, data):
        return cls(target=data.get("target"), compiler=data.get("compiler"), ops_on_npu=data.get("ops_on_npu"),
                   ops_on_cpu=list(data.get("ops_on_cpu") or []), npu_ops_fraction=data.get("npu_ops_fraction"),
                   estimated_ms=data.get("estimated_ms"))


@dataclasses.dataclass
class NpuReadiness:
    """``verdict``: ready | partial | not_ready; ``fully_int8``; ``problems``; one entry per target."""

    verdict: Optional[str]
    fully_int8: bool
    problems: List[str] = dataclasses.field(default_factory=list)
    targets: List[NpuTarget] = dataclasses.field(default_factory=list)
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data):
        return cls(verdict=data.get("verdict"), fully_int8=bool(data.get("fully_int8")),
                   problems=[str(p) for p in data.get("problems") or []],
                   targets=[NpuTarget.from_json(t) for t in data.get("targets") or []], raw=data)


@dataclasses.dataclass
class Report:
    """A finished command's result. ``verdict``: "pass" or "fail", as the command's exit status (0 or 1)
    says; ``failing``: what failed (parity cells, "int8 TFLite"); ``parity``: the parity matrix (empty
    for ``convert``); ``int8``: the int8 figures (None for ``verify_upgrade``); ``npu``: NPU readiness;
    ``raw``: the whole report.json."""

    command: str
    verdict: str
    run_dir: str
    failing: List[str] = dataclasses.field(default_factory=list)
    parity: List[ParityCell] = dataclasses.field(default_factory=list)
    int8: Optional[Int8Figures] = None
    npu: Optional[NpuReadiness] = None
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def passed(self):
        return self.verdict == "pass"

    @property
    def report_json(self):
        return os.path.join(self.run_dir, "report.json")

    @property
    def report_html(self):
        """The HTML report (None when the command writes none: verify_upgrade writes report.md)."""
        path = os.path.join(self.run_dir, "report.html")
        return path if os.path.exists(path) else None

    @property
    def int8_model(self):
        return self.int8.path if self.int8 else None

    @classmethod
    def read(cls, run_dir, command="", verdict=None, failing=()):
        """The report of run folder ``run_dir``; ``verdict`` defaults to report.json's own (verify_upgrade
        writes one), else "pass"."""
        run_dir = os.path.abspath(run_dir)
        with open(os.path.join(run_dir, "report.json")) as handle:
            data = json.load(handle)
        tflite = data.get("tflite")
        return cls(command=command, verdict=verdict or data.get("verdict") or "pass", run_dir=run_dir,
                   failing=list(failing or data.get("failing") or []),
                   parity=[ParityCell.from_json(cell) for cell in data.get("parity") or []],
                   int8=Int8Figures.from_json(tflite, run_dir) if tflite else None,
                   npu=NpuReadiness.from_json(data["npu"]) if data.get("npu") else None, raw=data)


@dataclasses.dataclass
class FleetModel:
    """One model of a fleet (fleet.json ``models[*]``). ``verdict``: pass | fail | error | missing;
    ``parity``: {environment: status}; ``int8``: the int8 figures (``sqnr_db``, ``cosine``,
    ``top1_agreement``, and ``sqnr_centered_db`` / ``correlation`` where the run reported them);
    ``npu``: {target: fraction of ops on the NPU}; ``error``: the paragraph of a model that failed."""

    index: int
    name: str
    path: str
    verdict: str
    failing: List[str] = dataclasses.field(default_factory=list)
    exit_code: Optional[int] = None
    error: Optional[str] = None
    parity: Dict[str, Optional[str]] = dataclasses.field(default_factory=dict)
    first_divergent_layer: Optional[str] = None
    int8: Dict[str, Any] = dataclasses.field(default_factory=dict)
    npu: Dict[str, Optional[float]] = dataclasses.field(default_factory=dict)
    run_dir: Optional[str] = None
    reused: Optional[bool] = None
    seconds: Optional[float] = None

    @property
    def passed(self):
        return self.verdict == "pass"

    def report(self):
        """This model's own ``Report`` (None when it has no run folder)."""
        return Report.read(self.run_dir, command="convert_legacy", verdict=self.verdict,
                           failing=self.failing) if self.run_dir else None

    @classmethod
    def from_json(cls, data):
        divergent = data.get("first_divergent_layer") or {}
        return cls(index=data.get("index"), name=data.get("name"), path=data.get("path"),
                   verdict=data.get("verdict"), failing=list(data.get("failing") or []),
                   exit_code=data.get("exit_code"), error=(data.get("error") or {}).get("paragraph"),
                   parity=dict((env, cell.get("status")) for env, cell in (data.get("parity") or {}).items()),
                   first_divergent_layer=divergent.get("layer"), int8=dict(data.get("int8") or {}),
                   npu=dict((target, figures.get("npu_ops_fraction"))
                            for target, figures in ((data.get("npu") or {}).get("targets") or {}).items()),
                   run_dir=data.get("run_dir"), reused=data.get("reused"), seconds=data.get("seconds"))


@dataclasses.dataclass
class FleetReport:
    """``tfbridge.fleet``'s result: every model of the manifest (``models``, manifest order) and the
    counts per verdict. ``fleet_html`` is None when only a shard ran (merge with ``tfbridge fleet-report``)."""

    out: str
    models: List[FleetModel]
    counts: Dict[str, int]
    fleet_json: Optional[str] = None
    fleet_html: Optional[str] = None
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def passed(self):
        """True when every model ran and passed."""
        return all(model.passed for model in self.models)

    def by_name(self, name):
        return next(model for model in self.models if model.name == name)

    @classmethod
    def from_json(cls, data, out, written=True):
        out = os.path.abspath(out)
        return cls(out=out, models=[FleetModel.from_json(model) for model in data.get("models") or []],
                   counts=dict(data.get("counts") or {}),
                   fleet_json=os.path.join(out, "fleet.json") if written else None,
                   fleet_html=os.path.join(out, "fleet.html") if written else None, raw=data)
