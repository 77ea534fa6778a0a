import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReservationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESERVATION_STATE_UNSPECIFIED: _ClassVar[ReservationState]
    RESERVATION_STATE_HELD: _ClassVar[ReservationState]
    RESERVATION_STATE_COMMITTED: _ClassVar[ReservationState]
    RESERVATION_STATE_FULFILLED: _ClassVar[ReservationState]
    RESERVATION_STATE_RELEASED: _ClassVar[ReservationState]
    RESERVATION_STATE_EXPIRED: _ClassVar[ReservationState]
RESERVATION_STATE_UNSPECIFIED: ReservationState
RESERVATION_STATE_HELD: ReservationState
RESERVATION_STATE_COMMITTED: ReservationState
RESERVATION_STATE_FULFILLED: ReservationState
RESERVATION_STATE_RELEASED: ReservationState
RESERVATION_STATE_EXPIRED: ReservationState

class ReserveRequest(_message.Message):
    __slots__ = ("reservation_id", "channel", "lines", "ttl", "allow_partial")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    channel: str
    lines: _containers.RepeatedCompositeFieldContainer[LineRequest]
    ttl: _duration_pb2.Duration
    allow_partial: bool
    def __init__(self, reservation_id: _Optional[str] = ..., channel: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[LineRequest, _Mapping]]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., allow_partial: _Optional[bool] = ...) -> None: ...

class LineRequest(_message.Message):
    __slots__ = ("sku", "quantity", "node")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    node: str
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ..., node: _Optional[str] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("reservation_id", "channel", "state", "lines", "allow_partial", "ttl", "create_time", "expire_time")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    channel: str
    state: ReservationState
    lines: _containers.RepeatedCompositeFieldContainer[ReservationLine]
    allow_partial: bool
    ttl: _duration_pb2.Duration
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, reservation_id: _Optional[str] = ..., channel: _Optional[str] = ..., state: _Optional[_Union[ReservationState, str]] = ..., lines: _Optional[_Iterable[_Union[ReservationLine, _Mapping]]] = ..., allow_partial: _Optional[bool] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReservationLine(_message.Message):
    __slots__ = ("line_index", "sku", "requested_quantity", "requested_node", "allocations", "allocated_quantity", "state")
    LINE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_NODE_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    line_index: int
    sku: str
    requested_quantity: int
    requested_node: str
    allocations: _containers.RepeatedCompositeFieldContainer[Allocation]
    allocated_quantity: int
    state: ReservationState
    def __init__(self, line_index: _Optional[int] = ..., sku: _Optional[str] = ..., requested_quantity: _Optional[int] = ..., requested_node: _Optional[str] = ..., allocations: _Optional[_Iterable[_Union[Allocation, _Mapping]]] = ..., allocated_quantity: _Optional[int] = ..., state: _Optional[_Union[ReservationState, str]] = ...) -> None: ...

class Allocation(_message.Message):
    __slots__ = ("node", "quantity")
    NODE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    node: str
    quantity: int
    def __init__(self, node: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("reservation_id", "line_indexes")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_INDEXES_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    line_indexes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, reservation_id: _Optional[str] = ..., line_indexes: _Optional[_Iterable[int]] = ...) -> None: ...

class FulfillRequest(_message.Message):
    __slots__ = ("reservation_id", "line_indexes")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    LINE_INDEXES_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    line_indexes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, reservation_id: _Optional[str] = ..., line_indexes: _Optional[_Iterable[int]] = ...) -> None: ...

class ExtendReservationRequest(_message.Message):
    __slots__ = ("reservation_id", "ttl")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    ttl: _duration_pb2.Duration
    def __init__(self, reservation_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetReservationRequest(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...

class GetAvailabilityRequest(_message.Message):
    __slots__ = ("skus", "channel", "nodes", "include_nodes")
    SKUS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_NODES_FIELD_NUMBER: _ClassVar[int]
    skus: _containers.RepeatedScalarFieldContainer[str]
    channel: str
    nodes: _containers.RepeatedScalarFieldContainer[str]
    include_nodes: bool
    def __init__(self, skus: _Optional[_Iterable[str]] = ..., channel: _Optional[str] = ..., nodes: _Optional[_Iterable[str]] = ..., include_nodes: _Optional[bool] = ...) -> None: ...

class GetAvailabilityResponse(_message.Message):
    __slots__ = ("availabilities",)
    AVAILABILITIES_FIELD_NUMBER: _ClassVar[int]
    availabilities: _containers.RepeatedCompositeFieldContainer[SkuAvailability]
    def __init__(self, availabilities: _Optional[_Iterable[_Union[SkuAvailability, _Mapping]]] = ...) -> None: ...

class SkuAvailability(_message.Message):
    __slots__ = ("sku", "atp", "nodes")
    SKU_FIELD_NUMBER: _ClassVar[int]
    ATP_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    sku: str
    atp: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeAvailability]
    def __init__(self, sku: _Optional[str] = ..., atp: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeAvailability, _Mapping]]] = ...) -> None: ...

class NodeAvailability(_message.Message):
    __slots__ = ("node", "on_hand", "reserved", "committed", "safety_stock", "atp")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    SAFETY_STOCK_FIELD_NUMBER: _ClassVar[int]
    ATP_FIELD_NUMBER: _ClassVar[int]
    node: str
    on_hand: int
    reserved: int
    committed: int
    safety_stock: int
    atp: int
    def __init__(self, node: _Optional[str] = ..., on_hand: _Optional[int] = ..., reserved: _Optional[int] = ..., committed: _Optional[int] = ..., safety_stock: _Optional[int] = ..., atp: _Optional[int] = ...) -> None: ...
