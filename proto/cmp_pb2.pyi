from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Fingerprint(_message.Message):
    __slots__ = ("host", "os", "python", "torch", "torch_npu", "cann", "driver", "chip", "vllm", "vllm_ascend", "transformers", "backend", "device", "device_name", "dtype", "model_name", "model_digest", "mode", "label", "options", "cuda")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOST_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    PYTHON_FIELD_NUMBER: _ClassVar[int]
    TORCH_FIELD_NUMBER: _ClassVar[int]
    TORCH_NPU_FIELD_NUMBER: _ClassVar[int]
    CANN_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    CHIP_FIELD_NUMBER: _ClassVar[int]
    VLLM_FIELD_NUMBER: _ClassVar[int]
    VLLM_ASCEND_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMERS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CUDA_FIELD_NUMBER: _ClassVar[int]
    host: str
    os: str
    python: str
    torch: str
    torch_npu: str
    cann: str
    driver: str
    chip: str
    vllm: str
    vllm_ascend: str
    transformers: str
    backend: str
    device: str
    device_name: str
    dtype: str
    model_name: str
    model_digest: str
    mode: str
    label: str
    options: _containers.ScalarMap[str, str]
    cuda: str
    def __init__(self, host: _Optional[str] = ..., os: _Optional[str] = ..., python: _Optional[str] = ..., torch: _Optional[str] = ..., torch_npu: _Optional[str] = ..., cann: _Optional[str] = ..., driver: _Optional[str] = ..., chip: _Optional[str] = ..., vllm: _Optional[str] = ..., vllm_ascend: _Optional[str] = ..., transformers: _Optional[str] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., device_name: _Optional[str] = ..., dtype: _Optional[str] = ..., model_name: _Optional[str] = ..., model_digest: _Optional[str] = ..., mode: _Optional[str] = ..., label: _Optional[str] = ..., options: _Optional[_Mapping[str, str]] = ..., cuda: _Optional[str] = ...) -> None: ...

class Prompt(_message.Message):
    __slots__ = ("id", "text")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class PromptSet(_message.Message):
    __slots__ = ("name", "digest", "prompts")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    digest: str
    prompts: _containers.RepeatedCompositeFieldContainer[Prompt]
    def __init__(self, name: _Optional[str] = ..., digest: _Optional[str] = ..., prompts: _Optional[_Iterable[_Union[Prompt, _Mapping]]] = ...) -> None: ...

class OpenRunRequest(_message.Message):
    __slots__ = ("fingerprint", "prompt_set", "client_key")
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SET_FIELD_NUMBER: _ClassVar[int]
    CLIENT_KEY_FIELD_NUMBER: _ClassVar[int]
    fingerprint: Fingerprint
    prompt_set: PromptSet
    client_key: str
    def __init__(self, fingerprint: _Optional[_Union[Fingerprint, _Mapping]] = ..., prompt_set: _Optional[_Union[PromptSet, _Mapping]] = ..., client_key: _Optional[str] = ...) -> None: ...

class OpenRunReply(_message.Message):
    __slots__ = ("run_id", "existing", "status", "stored_indexes")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STORED_INDEXES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    existing: bool
    status: str
    stored_indexes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, run_id: _Optional[str] = ..., existing: _Optional[bool] = ..., status: _Optional[str] = ..., stored_indexes: _Optional[_Iterable[int]] = ...) -> None: ...

class GetRecordsRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("index", "blob")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    index: int
    blob: bytes
    def __init__(self, index: _Optional[int] = ..., blob: _Optional[bytes] = ...) -> None: ...

class RecordBatch(_message.Message):
    __slots__ = ("run_id", "records")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    records: _containers.RepeatedCompositeFieldContainer[Record]
    def __init__(self, run_id: _Optional[str] = ..., records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ...) -> None: ...

class UploadSummary(_message.Message):
    __slots__ = ("stored", "total")
    STORED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    stored: int
    total: int
    def __init__(self, stored: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class CloseRunRequest(_message.Message):
    __slots__ = ("run_id", "record_count", "digest", "abort_reason", "perf")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ABORT_REASON_FIELD_NUMBER: _ClassVar[int]
    PERF_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    record_count: int
    digest: str
    abort_reason: str
    perf: _containers.RepeatedCompositeFieldContainer[PerfPoint]
    def __init__(self, run_id: _Optional[str] = ..., record_count: _Optional[int] = ..., digest: _Optional[str] = ..., abort_reason: _Optional[str] = ..., perf: _Optional[_Iterable[_Union[PerfPoint, _Mapping]]] = ...) -> None: ...

class PerfPoint(_message.Message):
    __slots__ = ("batch_size", "batches", "latency_ms", "p50_ms", "p95_ms", "p99_ms", "throughput")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    batches: int
    latency_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput: float
    def __init__(self, batch_size: _Optional[int] = ..., batches: _Optional[int] = ..., latency_ms: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., throughput: _Optional[float] = ...) -> None: ...

class CloseRunReply(_message.Message):
    __slots__ = ("status", "reason")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    status: str
    reason: str
    def __init__(self, status: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("limit", "model", "device", "dtype", "backend", "mode", "label", "status", "since", "until", "where")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    limit: int
    model: str
    device: str
    dtype: str
    backend: str
    mode: str
    label: str
    status: str
    since: str
    until: str
    where: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, limit: _Optional[int] = ..., model: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., backend: _Optional[str] = ..., mode: _Optional[str] = ..., label: _Optional[str] = ..., status: _Optional[str] = ..., since: _Optional[str] = ..., until: _Optional[str] = ..., where: _Optional[_Iterable[str]] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("run_id", "status", "status_reason", "created", "completed", "record_count", "prompt_set_name", "prompt_set_digest", "prompt_count", "fingerprint", "perf")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SET_NAME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SET_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PROMPT_COUNT_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    PERF_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: str
    status_reason: str
    created: str
    completed: str
    record_count: int
    prompt_set_name: str
    prompt_set_digest: str
    prompt_count: int
    fingerprint: Fingerprint
    perf: _containers.RepeatedCompositeFieldContainer[PerfPoint]
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[str] = ..., status_reason: _Optional[str] = ..., created: _Optional[str] = ..., completed: _Optional[str] = ..., record_count: _Optional[int] = ..., prompt_set_name: _Optional[str] = ..., prompt_set_digest: _Optional[str] = ..., prompt_count: _Optional[int] = ..., fingerprint: _Optional[_Union[Fingerprint, _Mapping]] = ..., perf: _Optional[_Iterable[_Union[PerfPoint, _Mapping]]] = ...) -> None: ...

class ListRunsReply(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class DiffRequest(_message.Message):
    __slots__ = ("run_a", "run_b", "thresholds", "detail")
    class ThresholdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_A_FIELD_NUMBER: _ClassVar[int]
    RUN_B_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    run_a: str
    run_b: str
    thresholds: _containers.ScalarMap[str, float]
    detail: bool
    def __init__(self, run_a: _Optional[str] = ..., run_b: _Optional[str] = ..., thresholds: _Optional[_Mapping[str, float]] = ..., detail: _Optional[bool] = ...) -> None: ...

class DiffReply(_message.Message):
    __slots__ = ("report_json",)
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    report_json: str
    def __init__(self, report_json: _Optional[str] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("model", "device", "baseline", "regression_tolerance", "where", "thresholds")
    class ThresholdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    REGRESSION_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    WHERE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    device: str
    baseline: str
    regression_tolerance: float
    where: _containers.RepeatedScalarFieldContainer[str]
    thresholds: _containers.ScalarMap[str, float]
    def __init__(self, model: _Optional[str] = ..., device: _Optional[str] = ..., baseline: _Optional[str] = ..., regression_tolerance: _Optional[float] = ..., where: _Optional[_Iterable[str]] = ..., thresholds: _Optional[_Mapping[str, float]] = ...) -> None: ...

class MatrixRequest(_message.Message):
    __slots__ = ("run_ids", "metric")
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    metric: str
    def __init__(self, run_ids: _Optional[_Iterable[str]] = ..., metric: _Optional[str] = ...) -> None: ...

class ReportReply(_message.Message):
    __slots__ = ("report_json",)
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    report_json: str
    def __init__(self, report_json: _Optional[str] = ...) -> None: ...
