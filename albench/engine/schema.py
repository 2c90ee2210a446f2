"""Typed run records (pydantic), with a schema version and the engine's numerics version.

A record is one job's result (:class:`RunRecord`), written as JSON after every round. Fields that
legitimately differ between two runs of the same job (wall-clock timings, the code version, the
resume history) are declared *volatile*; :func:`strip_volatile` drops exactly those, by reading
the models' field metadata, so comparing two runs never depends on a hand-kept list of keys.

``NUMERICS_VERSION`` names the numerics of training, augmentation, evaluation and metrics. Bump
it with every change that can change a result; ``tests/test_engine_golden.py`` replays a tiny
job and fails when its record changes while the version stays the same. Results of different
numerics versions are never compared (:func:`check_comparable`)."""

from __future__ import annotations

from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from albench.errors import AlbenchError

RECORD_SCHEMA = "albench.run/2"
NUMERICS_VERSION = 2


def volatile(default: Any = None, **kw: Any) -> Any:
    """A field that may differ between two runs of the same job (timings, code version)."""
    if "default_factory" in kw:
        return Field(json_schema_extra={"volatile": True}, **kw)
    return Field(default, json_schema_extra={"volatile": True}, **kw)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())


class Query(_Model):
    """One annotation request: the round it was made in and the store row."""

    round: int
    index: int
    time: float | None = volatile(description="seconds since the epoch (UTC)")


class CaseRegionMetrics(_Model):
    """Metrics of one region of one test case (distances in mm)."""

    dice: float
    hd: float
    hd95: float
    hd95_pooled: float
    gt_empty: bool
    pred_empty: bool


class RegionMean(_Model):
    """Mean over test cases of one region's metrics (distances in mm)."""

    dice: float
    hd: float
    hd95: float
    hd95_pooled: float


class CaseGeometry(_Model):
    """A test case's own voxel spacing (mm, slice axis, H, W) and empty-mask penalty (mm)."""

    spacing_mm: list[float]
    penalty_mm: float


class EvalInfo(_Model):
    """The round's test evaluation: per case and region, the means, and the regions predicted
    empty on every test case (a *collapse*)."""

    cases: dict[str, dict[str, CaseRegionMetrics]]
    mean: dict[str, RegionMean]
    geometry: dict[str, CaseGeometry] = Field(default_factory=dict)
    collapsed: list[str] = Field(default_factory=list)
    seconds: float | None = volatile()
    predict_seconds: float | None = volatile()
    metric_seconds: float | None = volatile()


class AuxInfo(_Model):
    """The method's training aux in this round: the track (``fair``: it saw detached features;
    ``joint``: its loss entered the segmenter's graph), the features it got, the mean aux loss
    per epoch and how many steps it observed."""

    track: Literal["fair", "joint"]
    features: str
    loss_curve: list[float] = Field(default_factory=list)
    steps: int = 0


class TrainInfo(_Model):
    """Segmenter training of one round: mean loss per epoch and optimiser steps."""

    loss_curve: list[float]
    steps: int
    seconds: float | None = volatile()
    aux: AuxInfo | None = None
    stopping: str = "fixed"
    val_cases: list[str] = Field(default_factory=list)
    val_curve: list[float] = Field(default_factory=list)
    best_epoch: int | None = None
    train_slices: int | None = None


class RoundRecord(_Model):
    """One round: train on L_r, evaluate, suggest (all but the last round)."""

    round: int
    schedule_fraction: float
    labelled_size: int
    labelled_fraction: float
    labelled: list[int]
    added: list[int]
    query_log: list[Query]
    train: TrainInfo
    eval: EvalInfo
    suggest_seconds: float | None = volatile()
    suggest_info: dict[str, Any] = Field(default_factory=dict, description="what the method reported about this round")


class HistoryEntry(_Model):
    """What a method sees of an earlier round: never test metrics."""

    round: int
    added: list[int]
    labelled_size: int
    labelled_fraction: float
    train_loss: list[float]

    @classmethod
    def of(cls, entry: RoundRecord) -> "HistoryEntry":
        return cls(round=entry.round, added=entry.added, labelled_size=entry.labelled_size,
                   labelled_fraction=entry.labelled_fraction, train_loss=entry.train.loss_curve)


class DatasetInfo(_Model):
    """The dataset a job ran on."""

    name: str
    fingerprint: str
    content_hash: str | None = None
    path: str = volatile("")
    size: list[int]
    channels: list[str]
    classes: list[str]
    regions: dict[str, list[int]]
    spacing_mm: list[float]
    penalty_mm: float
    train_slices: int
    test_cases: int
    slice_filter: Any = None


class MethodInfo(_Model):
    """The method of a job: its label in the protocol, its registered name or ``file.py:Class``
    spec, the parameters it was given, what it recorded of itself (``config``) and the hash of
    both that is part of the job's identity."""

    label: str
    name: str
    spec: str
    class_: str = Field(alias="class")
    privileged: bool
    upper_bound: bool = False
    requires: list[str]
    params: dict[str, Any]
    config: dict[str, Any] = Field(default_factory=dict)
    settings_hash: str
    source_sha256: str | None = None


class ExecutionInfo(_Model):
    """How ``suggest`` ran: ``sealed`` (a worker process per job that holds no labels) or
    ``in-process`` (debugging; refused by the leaderboard); whether the worker's file-system
    access to label files was taken away, and how."""

    mode: Literal["sealed", "in-process"]
    start_method: str | None = None
    fs_sealed: bool = False
    fs_seal: str = ""
    limits: dict[str, float] = Field(default_factory=dict)
    worker_start_seconds: float | None = volatile()
    # torch's intra-op threads of the job on a CPU (None on a GPU): float sums can change in
    # their last bits with it, so the shared round 0 is keyed by it; volatile because the
    # default depends on the machine's cores
    cpu_threads: int | None = volatile()


class Timings(_Model):
    job_seconds: float = 0.0
    resumed_from: list[int] = Field(default_factory=list)


class RunRecord(_Model):
    """One job's record (schema ``albench.run/2``)."""

    schema_: str = Field(RECORD_SCHEMA, alias="schema")
    numerics_version: int = NUMERICS_VERSION
    job: str
    status: Literal["running", "failed", "finished"]
    error: str | None = None
    failed_round: int | None = None
    protocol: dict[str, Any]
    quick: bool
    dataset: DatasetInfo
    method: MethodInfo
    seed: int
    device_type: str
    determinism: dict[str, Any] = Field(default_factory=dict)
    execution: ExecutionInfo
    training_track: Literal["fair", "joint"] = "fair"
    code_version: str = volatile("")
    code_versions_resumed: list[str] = volatile(default_factory=list)
    torch_version: str
    metrics: dict[str, str]
    index_space: str
    pool_size: int
    schedule_slices: list[int]
    test_cases: list[str]
    rounds: list[RoundRecord] = Field(default_factory=list)
    timings: Timings = volatile(default_factory=Timings)

    def dump(self) -> dict[str, Any]:
        """JSON-ready dict (field aliases: ``schema``, ``class``)."""
        return self.model_dump(mode="json", by_alias=True)

    def round_at(self, fraction: float) -> RoundRecord | None:
        """The round whose schedule fraction is ``fraction``, if any."""
        for entry in self.rounds:
            if abs(entry.schedule_fraction - fraction) < 1e-12:
                return entry
        return None


def parse_record(data: dict[str, Any], source: str = "<record>") -> RunRecord:
    """A RunRecord from JSON data; AlbenchError naming ``source`` and the field at fault."""
    from pydantic import ValidationError

    schema = data.get("schema") if isinstance(data, dict) else None
    if schema != RECORD_SCHEMA:
        raise AlbenchError(f"run record {source} has schema {schema!r}, this albench reads {RECORD_SCHEMA!r}; "
                           "re-run the job (delete the record) with this version")
    try:
        return RunRecord.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise AlbenchError(f"run record {source} is malformed at field '{where}': {first['msg']}; "
                           "it was truncated or edited by hand: delete it to re-run that job") from None


def _strip(model: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("volatile"):
            continue
        out[field.alias or name] = _strip_value(getattr(model, name))
    return out


def _strip_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _strip(value)
    if isinstance(value, dict):
        return {k: _strip_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strip_value(v) for v in value]
    return value


def strip_volatile(record: RunRecord | dict[str, Any]) -> dict[str, Any]:
    """The record without its volatile fields (for comparing two runs of the same job)."""
    if isinstance(record, dict):
        record = RunRecord.model_validate(record)
    return _strip(record)


def check_comparable(records: Sequence[RunRecord], what: str = "these results") -> None:
    """AlbenchError unless every record shares one numerics version (naming both versions)."""
    versions = sorted({r.numerics_version for r in records})
    if len(versions) > 1:
        jobs = {v: next(r.job for r in records if r.numerics_version == v) for v in versions}
        detail = "; ".join(f"numerics version {v} (e.g. {jobs[v]})" for v in versions)
        raise AlbenchError(f"{what} mix engine numerics versions: {detail}. Results of different numerics "
                           "versions are never compared; re-run the older jobs with this albench")
