import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.type import date_pb2 as _date_pb2
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

class FulfillmentMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FULFILLMENT_METHOD_UNSPECIFIED: _ClassVar[FulfillmentMethod]
    FULFILLMENT_METHOD_SHIP: _ClassVar[FulfillmentMethod]
    FULFILLMENT_METHOD_PICKUP: _ClassVar[FulfillmentMethod]

class SupplySource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUPPLY_SOURCE_UNSPECIFIED: _ClassVar[SupplySource]
    SUPPLY_SOURCE_STOCK: _ClassVar[SupplySource]
    SUPPLY_SOURCE_TRANSFER: _ClassVar[SupplySource]
    SUPPLY_SOURCE_INBOUND: _ClassVar[SupplySource]
RESERVATION_STATE_UNSPECIFIED: ReservationState
RESERVATION_STATE_HELD: ReservationState
RESERVATION_STATE_COMMITTED: ReservationState
RESERVATION_STATE_FULFILLED: ReservationState
RESERVATION_STATE_RELEASED: ReservationState
RESERVATION_STATE_EXPIRED: ReservationState
FULFILLMENT_METHOD_UNSPECIFIED: FulfillmentMethod
FULFILLMENT_METHOD_SHIP: FulfillmentMethod
FULFILLMENT_METHOD_PICKUP: FulfillmentMethod
SUPPLY_SOURCE_UNSPECIFIED: SupplySource
SUPPLY_SOURCE_STOCK: SupplySource
SUPPLY_SOURCE_TRANSFER: SupplySource
SUPPLY_SOURCE_INBOUND: SupplySource

class ReserveRequest(_message.Message):
    __slots__ = ("reservation_id", "channel", "lines", "ttl", "allow_partial", "fulfillment")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    FULFILLMENT_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    channel: str
    lines: _containers.RepeatedCompositeFieldContainer[LineRequest]
    ttl: _duration_pb2.Duration
    allow_partial: bool
    fulfillment: FulfillmentContext
    def __init__(self, reservation_id: _Optional[str] = ..., channel: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[LineRequest, _Mapping]]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., allow_partial: _Optional[bool] = ..., fulfillment: _Optional[_Union[FulfillmentContext, _Mapping]] = ...) -> None: ...

class FulfillmentContext(_message.Message):
    __slots__ = ("method", "destination", "pickup_store", "service_level", "allow_split", "allow_backorder")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    PICKUP_STORE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SPLIT_FIELD_NUMBER: _ClassVar[int]
    ALLOW_BACKORDER_FIELD_NUMBER: _ClassVar[int]
    method: FulfillmentMethod
    destination: Destination
    pickup_store: str
    service_level: str
    allow_split: bool
    allow_backorder: bool
    def __init__(self, method: _Optional[_Union[FulfillmentMethod, str]] = ..., destination: _Optional[_Union[Destination, _Mapping]] = ..., pickup_store: _Optional[str] = ..., service_level: _Optional[str] = ..., allow_split: _Optional[bool] = ..., allow_backorder: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("line_index", "sku", "requested_quantity", "requested_node", "allocations", "allocated_quantity", "state", "promise_date", "ready_time", "ready_time_zone", "backorder")
    LINE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_NODE_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROMISE_DATE_FIELD_NUMBER: _ClassVar[int]
    READY_TIME_FIELD_NUMBER: _ClassVar[int]
    READY_TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    BACKORDER_FIELD_NUMBER: _ClassVar[int]
    line_index: int
    sku: str
    requested_quantity: int
    requested_node: str
    allocations: _containers.RepeatedCompositeFieldContainer[Allocation]
    allocated_quantity: int
    state: ReservationState
    promise_date: _date_pb2.Date
    ready_time: _timestamp_pb2.Timestamp
    ready_time_zone: str
    backorder: bool
    def __init__(self, line_index: _Optional[int] = ..., sku: _Optional[str] = ..., requested_quantity: _Optional[int] = ..., requested_node: _Optional[str] = ..., allocations: _Optional[_Iterable[_Union[Allocation, _Mapping]]] = ..., allocated_quantity: _Optional[int] = ..., state: _Optional[_Union[ReservationState, str]] = ..., promise_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., ready_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ready_time_zone: _Optional[str] = ..., backorder: _Optional[bool] = ...) -> None: ...

class Allocation(_message.Message):
    __slots__ = ("node", "quantity", "promise_date", "ready_time", "source", "available_time", "supply_ids")
    NODE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PROMISE_DATE_FIELD_NUMBER: _ClassVar[int]
    READY_TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_TIME_FIELD_NUMBER: _ClassVar[int]
    SUPPLY_IDS_FIELD_NUMBER: _ClassVar[int]
    node: str
    quantity: int
    promise_date: _date_pb2.Date
    ready_time: _timestamp_pb2.Timestamp
    source: SupplySource
    available_time: _timestamp_pb2.Timestamp
    supply_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node: _Optional[str] = ..., quantity: _Optional[int] = ..., promise_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., ready_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[_Union[SupplySource, str]] = ..., available_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., supply_ids: _Optional[_Iterable[str]] = ...) -> None: ...

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
    __slots__ = ("skus", "channel", "nodes", "include_nodes", "include_future")
    SKUS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_NODES_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FUTURE_FIELD_NUMBER: _ClassVar[int]
    skus: _containers.RepeatedScalarFieldContainer[str]
    channel: str
    nodes: _containers.RepeatedScalarFieldContainer[str]
    include_nodes: bool
    include_future: bool
    def __init__(self, skus: _Optional[_Iterable[str]] = ..., channel: _Optional[str] = ..., nodes: _Optional[_Iterable[str]] = ..., include_nodes: _Optional[bool] = ..., include_future: _Optional[bool] = ...) -> None: ...

class GetAvailabilityResponse(_message.Message):
    __slots__ = ("availabilities",)
    AVAILABILITIES_FIELD_NUMBER: _ClassVar[int]
    availabilities: _containers.RepeatedCompositeFieldContainer[SkuAvailability]
    def __init__(self, availabilities: _Optional[_Iterable[_Union[SkuAvailability, _Mapping]]] = ...) -> None: ...

class SkuAvailability(_message.Message):
    __slots__ = ("sku", "atp", "nodes", "future")
    SKU_FIELD_NUMBER: _ClassVar[int]
    ATP_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    FUTURE_FIELD_NUMBER: _ClassVar[int]
    sku: str
    atp: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeAvailability]
    future: _containers.RepeatedCompositeFieldContainer[AvailabilityStep]
    def __init__(self, sku: _Optional[str] = ..., atp: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeAvailability, _Mapping]]] = ..., future: _Optional[_Iterable[_Union[AvailabilityStep, _Mapping]]] = ...) -> None: ...

class AvailabilityStep(_message.Message):
    __slots__ = ("time", "atp", "supply_ids")
    TIME_FIELD_NUMBER: _ClassVar[int]
    ATP_FIELD_NUMBER: _ClassVar[int]
    SUPPLY_IDS_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    atp: int
    supply_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., atp: _Optional[int] = ..., supply_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class NodeAvailability(_message.Message):
    __slots__ = ("node", "on_hand", "reserved", "committed", "safety_stock", "atp", "future")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    SAFETY_STOCK_FIELD_NUMBER: _ClassVar[int]
    ATP_FIELD_NUMBER: _ClassVar[int]
    FUTURE_FIELD_NUMBER: _ClassVar[int]
    node: str
    on_hand: int
    reserved: int
    committed: int
    safety_stock: int
    atp: int
    future: _containers.RepeatedCompositeFieldContainer[AvailabilityStep]
    def __init__(self, node: _Optional[str] = ..., on_hand: _Optional[int] = ..., reserved: _Optional[int] = ..., committed: _Optional[int] = ..., safety_stock: _Optional[int] = ..., atp: _Optional[int] = ..., future: _Optional[_Iterable[_Union[AvailabilityStep, _Mapping]]] = ...) -> None: ...

class QuoteRequest(_message.Message):
    __slots__ = ("channel", "lines", "destination", "pickup_store", "methods", "service_levels", "allow_split", "allow_backorder")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    PICKUP_STORE_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_LEVELS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SPLIT_FIELD_NUMBER: _ClassVar[int]
    ALLOW_BACKORDER_FIELD_NUMBER: _ClassVar[int]
    channel: str
    lines: _containers.RepeatedCompositeFieldContainer[QuoteLine]
    destination: Destination
    pickup_store: str
    methods: _containers.RepeatedScalarFieldContainer[FulfillmentMethod]
    service_levels: _containers.RepeatedScalarFieldContainer[str]
    allow_split: bool
    allow_backorder: bool
    def __init__(self, channel: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[QuoteLine, _Mapping]]] = ..., destination: _Optional[_Union[Destination, _Mapping]] = ..., pickup_store: _Optional[str] = ..., methods: _Optional[_Iterable[_Union[FulfillmentMethod, str]]] = ..., service_levels: _Optional[_Iterable[str]] = ..., allow_split: _Optional[bool] = ..., allow_backorder: _Optional[bool] = ...) -> None: ...

class QuoteLine(_message.Message):
    __slots__ = ("sku", "quantity")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class Destination(_message.Message):
    __slots__ = ("postal_code", "latitude", "longitude", "region")
    POSTAL_CODE_FIELD_NUMBER: _ClassVar[int]
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    postal_code: str
    latitude: float
    longitude: float
    region: str
    def __init__(self, postal_code: _Optional[str] = ..., latitude: _Optional[float] = ..., longitude: _Optional[float] = ..., region: _Optional[str] = ...) -> None: ...

class QuoteResponse(_message.Message):
    __slots__ = ("quote_time", "lines")
    QUOTE_TIME_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    quote_time: _timestamp_pb2.Timestamp
    lines: _containers.RepeatedCompositeFieldContainer[LineQuote]
    def __init__(self, quote_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lines: _Optional[_Iterable[_Union[LineQuote, _Mapping]]] = ...) -> None: ...

class LineQuote(_message.Message):
    __slots__ = ("line_index", "sku", "quantity", "options")
    LINE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    line_index: int
    sku: str
    quantity: int
    options: _containers.RepeatedCompositeFieldContainer[FulfillmentOption]
    def __init__(self, line_index: _Optional[int] = ..., sku: _Optional[str] = ..., quantity: _Optional[int] = ..., options: _Optional[_Iterable[_Union[FulfillmentOption, _Mapping]]] = ...) -> None: ...

class FulfillmentOption(_message.Message):
    __slots__ = ("method", "service_level", "promise_date", "ready_time", "ready_time_zone", "allocations", "split", "backorder")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SERVICE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    PROMISE_DATE_FIELD_NUMBER: _ClassVar[int]
    READY_TIME_FIELD_NUMBER: _ClassVar[int]
    READY_TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    BACKORDER_FIELD_NUMBER: _ClassVar[int]
    method: FulfillmentMethod
    service_level: str
    promise_date: _date_pb2.Date
    ready_time: _timestamp_pb2.Timestamp
    ready_time_zone: str
    allocations: _containers.RepeatedCompositeFieldContainer[SourcedAllocation]
    split: bool
    backorder: bool
    def __init__(self, method: _Optional[_Union[FulfillmentMethod, str]] = ..., service_level: _Optional[str] = ..., promise_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., ready_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ready_time_zone: _Optional[str] = ..., allocations: _Optional[_Iterable[_Union[SourcedAllocation, _Mapping]]] = ..., split: _Optional[bool] = ..., backorder: _Optional[bool] = ...) -> None: ...

class SourcedAllocation(_message.Message):
    __slots__ = ("node", "quantity", "source", "promise_date", "ship_date", "distance_km", "available_time", "supply_ids")
    NODE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PROMISE_DATE_FIELD_NUMBER: _ClassVar[int]
    SHIP_DATE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_KM_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_TIME_FIELD_NUMBER: _ClassVar[int]
    SUPPLY_IDS_FIELD_NUMBER: _ClassVar[int]
    node: str
    quantity: int
    source: SupplySource
    promise_date: _date_pb2.Date
    ship_date: _date_pb2.Date
    distance_km: float
    available_time: _timestamp_pb2.Timestamp
    supply_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node: _Optional[str] = ..., quantity: _Optional[int] = ..., source: _Optional[_Union[SupplySource, str]] = ..., promise_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., ship_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., distance_km: _Optional[float] = ..., available_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., supply_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class FindInStoresRequest(_message.Message):
    __slots__ = ("channel", "store", "sku", "quantity", "max_stores")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    MAX_STORES_FIELD_NUMBER: _ClassVar[int]
    channel: str
    store: str
    sku: str
    quantity: int
    max_stores: int
    def __init__(self, channel: _Optional[str] = ..., store: _Optional[str] = ..., sku: _Optional[str] = ..., quantity: _Optional[int] = ..., max_stores: _Optional[int] = ...) -> None: ...

class FindInStoresResponse(_message.Message):
    __slots__ = ("sku", "quantity", "store", "nearby_stores")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    NEARBY_STORES_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    store: StoreAvailability
    nearby_stores: _containers.RepeatedCompositeFieldContainer[StoreAvailability]
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ..., store: _Optional[_Union[StoreAvailability, _Mapping]] = ..., nearby_stores: _Optional[_Iterable[_Union[StoreAvailability, _Mapping]]] = ...) -> None: ...

class StoreAvailability(_message.Message):
    __slots__ = ("node", "name", "atp", "distance_km", "pickup_time", "pickup_date", "time_zone")
    NODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATP_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_KM_FIELD_NUMBER: _ClassVar[int]
    PICKUP_TIME_FIELD_NUMBER: _ClassVar[int]
    PICKUP_DATE_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    node: str
    name: str
    atp: int
    distance_km: float
    pickup_time: _timestamp_pb2.Timestamp
    pickup_date: _date_pb2.Date
    time_zone: str
    def __init__(self, node: _Optional[str] = ..., name: _Optional[str] = ..., atp: _Optional[int] = ..., distance_km: _Optional[float] = ..., pickup_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pickup_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., time_zone: _Optional[str] = ...) -> None: ...
