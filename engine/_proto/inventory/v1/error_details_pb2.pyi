from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OutOfStockDetail(_message.Message):
    __slots__ = ("shortfalls",)
    SHORTFALLS_FIELD_NUMBER: _ClassVar[int]
    shortfalls: _containers.RepeatedCompositeFieldContainer[LineShortfall]
    def __init__(self, shortfalls: _Optional[_Iterable[_Union[LineShortfall, _Mapping]]] = ...) -> None: ...

class LineShortfall(_message.Message):
    __slots__ = ("line_index", "sku", "requested", "available")
    LINE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    line_index: int
    sku: str
    requested: int
    available: int
    def __init__(self, line_index: _Optional[int] = ..., sku: _Optional[str] = ..., requested: _Optional[int] = ..., available: _Optional[int] = ...) -> None: ...
