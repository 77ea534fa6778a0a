import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from engine._proto.inventory.v1 import stock_pb2 as _stock_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InboundKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INBOUND_KIND_UNSPECIFIED: _ClassVar[InboundKind]
    INBOUND_KIND_PURCHASE_ORDER: _ClassVar[InboundKind]
    INBOUND_KIND_TRANSFER: _ClassVar[InboundKind]

class InboundOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INBOUND_OUTCOME_UNSPECIFIED: _ClassVar[InboundOutcome]
    INBOUND_OUTCOME_CREATED: _ClassVar[InboundOutcome]
    INBOUND_OUTCOME_UPDATED: _ClassVar[InboundOutcome]
    INBOUND_OUTCOME_UNCHANGED: _ClassVar[InboundOutcome]
INBOUND_KIND_UNSPECIFIED: InboundKind
INBOUND_KIND_PURCHASE_ORDER: InboundKind
INBOUND_KIND_TRANSFER: InboundKind
INBOUND_OUTCOME_UNSPECIFIED: InboundOutcome
INBOUND_OUTCOME_CREATED: InboundOutcome
INBOUND_OUTCOME_UPDATED: InboundOutcome
INBOUND_OUTCOME_UNCHANGED: InboundOutcome

class AdjustStockRequest(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[StockAdjustment]
    def __init__(self, changes: _Optional[_Iterable[_Union[StockAdjustment, _Mapping]]] = ...) -> None: ...

class StockAdjustment(_message.Message):
    __slots__ = ("sku", "node", "delta", "event_id")
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    sku: str
    node: str
    delta: int
    event_id: str
    def __init__(self, sku: _Optional[str] = ..., node: _Optional[str] = ..., delta: _Optional[int] = ..., event_id: _Optional[str] = ...) -> None: ...

class SetStockRequest(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[StockCount]
    def __init__(self, changes: _Optional[_Iterable[_Union[StockCount, _Mapping]]] = ...) -> None: ...

class StockCount(_message.Message):
    __slots__ = ("sku", "node", "on_hand", "version", "event_id")
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    sku: str
    node: str
    on_hand: int
    version: int
    event_id: str
    def __init__(self, sku: _Optional[str] = ..., node: _Optional[str] = ..., on_hand: _Optional[int] = ..., version: _Optional[int] = ..., event_id: _Optional[str] = ...) -> None: ...

class SetSafetyStockRequest(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[SafetyStockSetting]
    def __init__(self, changes: _Optional[_Iterable[_Union[SafetyStockSetting, _Mapping]]] = ...) -> None: ...

class SafetyStockSetting(_message.Message):
    __slots__ = ("sku", "node", "safety_stock", "event_id", "use_node_default")
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    SAFETY_STOCK_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USE_NODE_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    sku: str
    node: str
    safety_stock: int
    event_id: str
    use_node_default: bool
    def __init__(self, sku: _Optional[str] = ..., node: _Optional[str] = ..., safety_stock: _Optional[int] = ..., event_id: _Optional[str] = ..., use_node_default: _Optional[bool] = ...) -> None: ...

class SupplyChangeResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SupplyChangeResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SupplyChangeResult, _Mapping]]] = ...) -> None: ...

class SupplyChangeResult(_message.Message):
    __slots__ = ("level", "applied", "duplicate")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    level: _stock_pb2.StockLevel
    applied: bool
    duplicate: bool
    def __init__(self, level: _Optional[_Union[_stock_pb2.StockLevel, _Mapping]] = ..., applied: _Optional[bool] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class InboundSupply(_message.Message):
    __slots__ = ("id", "sku", "node", "quantity", "eta", "kind")
    ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    id: str
    sku: str
    node: str
    quantity: int
    eta: _timestamp_pb2.Timestamp
    kind: InboundKind
    def __init__(self, id: _Optional[str] = ..., sku: _Optional[str] = ..., node: _Optional[str] = ..., quantity: _Optional[int] = ..., eta: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[InboundKind, str]] = ...) -> None: ...

class UpsertInboundSupplyRequest(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[InboundSupply]
    def __init__(self, records: _Optional[_Iterable[_Union[InboundSupply, _Mapping]]] = ...) -> None: ...

class UpsertInboundSupplyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[InboundSupplyResult]
    def __init__(self, results: _Optional[_Iterable[_Union[InboundSupplyResult, _Mapping]]] = ...) -> None: ...

class InboundSupplyResult(_message.Message):
    __slots__ = ("record", "outcome")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    record: InboundSupply
    outcome: InboundOutcome
    def __init__(self, record: _Optional[_Union[InboundSupply, _Mapping]] = ..., outcome: _Optional[_Union[InboundOutcome, str]] = ...) -> None: ...

class DeleteInboundSupplyRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteInboundSupplyResponse(_message.Message):
    __slots__ = ("deleted_ids", "not_found_ids")
    DELETED_IDS_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_IDS_FIELD_NUMBER: _ClassVar[int]
    deleted_ids: _containers.RepeatedScalarFieldContainer[str]
    not_found_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted_ids: _Optional[_Iterable[str]] = ..., not_found_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListInboundSupplyRequest(_message.Message):
    __slots__ = ("sku", "node", "page_size", "page_token")
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sku: str
    node: str
    page_size: int
    page_token: str
    def __init__(self, sku: _Optional[str] = ..., node: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListInboundSupplyResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[InboundSupply]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[InboundSupply, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
