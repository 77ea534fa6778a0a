from engine._proto.inventory.v1 import stock_pb2 as _stock_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("sku", "node", "safety_stock", "event_id")
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    SAFETY_STOCK_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    sku: str
    node: str
    safety_stock: int
    event_id: str
    def __init__(self, sku: _Optional[str] = ..., node: _Optional[str] = ..., safety_stock: _Optional[int] = ..., event_id: _Optional[str] = ...) -> None: ...

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
