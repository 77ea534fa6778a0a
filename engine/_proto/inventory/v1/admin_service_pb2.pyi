from engine._proto.inventory.v1 import stock_pb2 as _stock_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AuditResponse(_message.Message):
    __slots__ = ("ok", "violations", "shortages", "row_count", "reservation_count")
    OK_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    SHORTAGES_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_COUNT_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    violations: _containers.RepeatedScalarFieldContainer[str]
    shortages: _containers.RepeatedCompositeFieldContainer[_stock_pb2.StockLevel]
    row_count: int
    reservation_count: int
    def __init__(self, ok: _Optional[bool] = ..., violations: _Optional[_Iterable[str]] = ..., shortages: _Optional[_Iterable[_Union[_stock_pb2.StockLevel, _Mapping]]] = ..., row_count: _Optional[int] = ..., reservation_count: _Optional[int] = ...) -> None: ...

class NoopRequest(_message.Message):
    __slots__ = ("out_of_stock_sku",)
    OUT_OF_STOCK_SKU_FIELD_NUMBER: _ClassVar[int]
    out_of_stock_sku: str
    def __init__(self, out_of_stock_sku: _Optional[str] = ...) -> None: ...

class NoopResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
