import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.type import date_pb2 as _date_pb2
from google.type import dayofweek_pb2 as _dayofweek_pb2
from google.type import timeofday_pb2 as _timeofday_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_TYPE_UNSPECIFIED: _ClassVar[NodeType]
    NODE_TYPE_DC: _ClassVar[NodeType]
    NODE_TYPE_STORE: _ClassVar[NodeType]
    NODE_TYPE_VENDOR: _ClassVar[NodeType]

class AllocationRuleKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALLOCATION_RULE_KIND_UNSPECIFIED: _ClassVar[AllocationRuleKind]
    ALLOCATION_RULE_KIND_SHARE: _ClassVar[AllocationRuleKind]
    ALLOCATION_RULE_KIND_CAP: _ClassVar[AllocationRuleKind]
    ALLOCATION_RULE_KIND_PROTECT: _ClassVar[AllocationRuleKind]

class CarrierTableSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CARRIER_TABLE_SOURCE_UNSPECIFIED: _ClassVar[CarrierTableSource]
    CARRIER_TABLE_SOURCE_SERVER: _ClassVar[CarrierTableSource]
    CARRIER_TABLE_SOURCE_API: _ClassVar[CarrierTableSource]
NODE_TYPE_UNSPECIFIED: NodeType
NODE_TYPE_DC: NodeType
NODE_TYPE_STORE: NodeType
NODE_TYPE_VENDOR: NodeType
ALLOCATION_RULE_KIND_UNSPECIFIED: AllocationRuleKind
ALLOCATION_RULE_KIND_SHARE: AllocationRuleKind
ALLOCATION_RULE_KIND_CAP: AllocationRuleKind
ALLOCATION_RULE_KIND_PROTECT: AllocationRuleKind
CARRIER_TABLE_SOURCE_UNSPECIFIED: CarrierTableSource
CARRIER_TABLE_SOURCE_SERVER: CarrierTableSource
CARRIER_TABLE_SOURCE_API: CarrierTableSource

class Node(_message.Message):
    __slots__ = ("id", "type", "name", "region", "latitude", "longitude", "time_zone", "capabilities", "postal_prefix", "processing_days", "pickup_minutes", "cutoff", "opens_at", "open_weekdays", "holidays", "daily_capacity", "default_safety_stock")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    POSTAL_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_DAYS_FIELD_NUMBER: _ClassVar[int]
    PICKUP_MINUTES_FIELD_NUMBER: _ClassVar[int]
    CUTOFF_FIELD_NUMBER: _ClassVar[int]
    OPENS_AT_FIELD_NUMBER: _ClassVar[int]
    OPEN_WEEKDAYS_FIELD_NUMBER: _ClassVar[int]
    HOLIDAYS_FIELD_NUMBER: _ClassVar[int]
    DAILY_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SAFETY_STOCK_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: NodeType
    name: str
    region: str
    latitude: float
    longitude: float
    time_zone: str
    capabilities: NodeCapabilities
    postal_prefix: str
    processing_days: int
    pickup_minutes: int
    cutoff: _timeofday_pb2.TimeOfDay
    opens_at: _timeofday_pb2.TimeOfDay
    open_weekdays: _containers.RepeatedScalarFieldContainer[_dayofweek_pb2.DayOfWeek]
    holidays: _containers.RepeatedCompositeFieldContainer[_date_pb2.Date]
    daily_capacity: int
    default_safety_stock: int
    def __init__(self, id: _Optional[str] = ..., type: _Optional[_Union[NodeType, str]] = ..., name: _Optional[str] = ..., region: _Optional[str] = ..., latitude: _Optional[float] = ..., longitude: _Optional[float] = ..., time_zone: _Optional[str] = ..., capabilities: _Optional[_Union[NodeCapabilities, _Mapping]] = ..., postal_prefix: _Optional[str] = ..., processing_days: _Optional[int] = ..., pickup_minutes: _Optional[int] = ..., cutoff: _Optional[_Union[_timeofday_pb2.TimeOfDay, _Mapping]] = ..., opens_at: _Optional[_Union[_timeofday_pb2.TimeOfDay, _Mapping]] = ..., open_weekdays: _Optional[_Iterable[_Union[_dayofweek_pb2.DayOfWeek, str]]] = ..., holidays: _Optional[_Iterable[_Union[_date_pb2.Date, _Mapping]]] = ..., daily_capacity: _Optional[int] = ..., default_safety_stock: _Optional[int] = ...) -> None: ...

class NodeCapabilities(_message.Message):
    __slots__ = ("ship", "pickup", "ship_from_store")
    SHIP_FIELD_NUMBER: _ClassVar[int]
    PICKUP_FIELD_NUMBER: _ClassVar[int]
    SHIP_FROM_STORE_FIELD_NUMBER: _ClassVar[int]
    ship: bool
    pickup: bool
    ship_from_store: bool
    def __init__(self, ship: _Optional[bool] = ..., pickup: _Optional[bool] = ..., ship_from_store: _Optional[bool] = ...) -> None: ...

class Channel(_message.Message):
    __slots__ = ("id", "name", "nodes", "allocation_rules", "allow_backorder")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_RULES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_BACKORDER_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    nodes: _containers.RepeatedScalarFieldContainer[str]
    allocation_rules: _containers.RepeatedCompositeFieldContainer[AllocationRule]
    allow_backorder: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., nodes: _Optional[_Iterable[str]] = ..., allocation_rules: _Optional[_Iterable[_Union[AllocationRule, _Mapping]]] = ..., allow_backorder: _Optional[bool] = ...) -> None: ...

class AllocationRule(_message.Message):
    __slots__ = ("kind", "value", "node", "node_type", "protects")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROTECTS_FIELD_NUMBER: _ClassVar[int]
    kind: AllocationRuleKind
    value: int
    node: str
    node_type: NodeType
    protects: str
    def __init__(self, kind: _Optional[_Union[AllocationRuleKind, str]] = ..., value: _Optional[int] = ..., node: _Optional[str] = ..., node_type: _Optional[_Union[NodeType, str]] = ..., protects: _Optional[str] = ...) -> None: ...

class UpsertNodeRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class UpsertChannelRequest(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: Channel
    def __init__(self, channel: _Optional[_Union[Channel, _Mapping]] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...

class ListChannelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListChannelsResponse(_message.Message):
    __slots__ = ("channels",)
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedCompositeFieldContainer[Channel]
    def __init__(self, channels: _Optional[_Iterable[_Union[Channel, _Mapping]]] = ...) -> None: ...

class CarrierTable(_message.Message):
    __slots__ = ("regions", "postal_centroids", "transfer_service", "service_levels", "etag", "source", "update_time")
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    POSTAL_CENTROIDS_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_SERVICE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_LEVELS_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    regions: _containers.RepeatedCompositeFieldContainer[CarrierRegion]
    postal_centroids: _containers.RepeatedCompositeFieldContainer[PostalCentroid]
    transfer_service: str
    service_levels: _containers.RepeatedCompositeFieldContainer[ServiceLevel]
    etag: str
    source: CarrierTableSource
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, regions: _Optional[_Iterable[_Union[CarrierRegion, _Mapping]]] = ..., postal_centroids: _Optional[_Iterable[_Union[PostalCentroid, _Mapping]]] = ..., transfer_service: _Optional[str] = ..., service_levels: _Optional[_Iterable[_Union[ServiceLevel, _Mapping]]] = ..., etag: _Optional[str] = ..., source: _Optional[_Union[CarrierTableSource, str]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CarrierRegion(_message.Message):
    __slots__ = ("name", "postal_prefixes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POSTAL_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    name: str
    postal_prefixes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., postal_prefixes: _Optional[_Iterable[str]] = ...) -> None: ...

class PostalCentroid(_message.Message):
    __slots__ = ("postal_prefix", "latitude", "longitude")
    POSTAL_PREFIX_FIELD_NUMBER: _ClassVar[int]
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    postal_prefix: str
    latitude: float
    longitude: float
    def __init__(self, postal_prefix: _Optional[str] = ..., latitude: _Optional[float] = ..., longitude: _Optional[float] = ...) -> None: ...

class ServiceLevel(_message.Message):
    __slots__ = ("name", "description", "delivery_days", "transit", "distance_bands", "default_days", "internal")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_DAYS_FIELD_NUMBER: _ClassVar[int]
    TRANSIT_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_BANDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_DAYS_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    delivery_days: _containers.RepeatedScalarFieldContainer[_dayofweek_pb2.DayOfWeek]
    transit: _containers.RepeatedCompositeFieldContainer[TransitTime]
    distance_bands: _containers.RepeatedCompositeFieldContainer[DistanceBand]
    default_days: int
    internal: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., delivery_days: _Optional[_Iterable[_Union[_dayofweek_pb2.DayOfWeek, str]]] = ..., transit: _Optional[_Iterable[_Union[TransitTime, _Mapping]]] = ..., distance_bands: _Optional[_Iterable[_Union[DistanceBand, _Mapping]]] = ..., default_days: _Optional[int] = ..., internal: _Optional[bool] = ...) -> None: ...

class TransitTime(_message.Message):
    __slots__ = ("from_region", "to_region", "days")
    FROM_REGION_FIELD_NUMBER: _ClassVar[int]
    TO_REGION_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    from_region: str
    to_region: str
    days: int
    def __init__(self, from_region: _Optional[str] = ..., to_region: _Optional[str] = ..., days: _Optional[int] = ...) -> None: ...

class DistanceBand(_message.Message):
    __slots__ = ("max_km", "days")
    MAX_KM_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    max_km: float
    days: int
    def __init__(self, max_km: _Optional[float] = ..., days: _Optional[int] = ...) -> None: ...

class GetCarrierTableRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetCarrierTableRequest(_message.Message):
    __slots__ = ("carrier_table",)
    CARRIER_TABLE_FIELD_NUMBER: _ClassVar[int]
    carrier_table: CarrierTable
    def __init__(self, carrier_table: _Optional[_Union[CarrierTable, _Mapping]] = ...) -> None: ...

class ResetCarrierTableRequest(_message.Message):
    __slots__ = ("etag",)
    ETAG_FIELD_NUMBER: _ClassVar[int]
    etag: str
    def __init__(self, etag: _Optional[str] = ...) -> None: ...
