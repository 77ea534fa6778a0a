from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class StockLevel(_message.Message):
    __slots__ = ("sku", "node", "on_hand", "reserved", "committed", "safety_stock", "version", "atp", "shortage")
    SKU_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    SAFETY_STOCK_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ATP_FIELD_NUMBER: _ClassVar[int]
    SHORTAGE_FIELD_NUMBER: _ClassVar[int]
    sku: str
    node: str
    on_hand: int
    reserved: int
    committed: int
    safety_stock: int
    version: int
    atp: int
    shortage: int
    def __init__(self, sku: _Optional[str] = ..., node: _Optional[str] = ..., on_hand: _Optional[int] = ..., reserved: _Optional[int] = ..., committed: _Optional[int] = ..., safety_stock: _Optional[int] = ..., version: _Optional[int] = ..., atp: _Optional[int] = ..., shortage: _Optional[int] = ...) -> None: ...
