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
NODE_TYPE_UNSPECIFIED: NodeType
NODE_TYPE_DC: NodeType
NODE_TYPE_STORE: NodeType
NODE_TYPE_VENDOR: NodeType
ALLOCATION_RULE_KIND_UNSPECIFIED: AllocationRuleKind
ALLOCATION_RULE_KIND_SHARE: AllocationRuleKind
ALLOCATION_RULE_KIND_CAP: AllocationRuleKind
ALLOCATION_RULE_KIND_PROTECT: AllocationRuleKind

class Node(_message.Message):
    __slots__ = ("id", "type", "name", "region", "latitude", "longitude", "time_zone", "capabilities", "postal_prefix", "processing_days", "pickup_minutes", "cutoff", "opens_at", "open_weekdays", "holidays", "daily_capacity")
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
    def __init__(self, id: _Optional[str] = ..., type: _Optional[_Union[NodeType, str]] = ..., name: _Optional[str] = ..., region: _Optional[str] = ..., latitude: _Optional[float] = ..., longitude: _Optional[float] = ..., time_zone: _Optional[str] = ..., capabilities: _Optional[_Union[NodeCapabilities, _Mapping]] = ..., postal_prefix: _Optional[str] = ..., processing_days: _Optional[int] = ..., pickup_minutes: _Optional[int] = ..., cutoff: _Optional[_Union[_timeofday_pb2.TimeOfDay, _Mapping]] = ..., opens_at: _Optional[_Union[_timeofday_pb2.TimeOfDay, _Mapping]] = ..., open_weekdays: _Optional[_Iterable[_Union[_dayofweek_pb2.DayOfWeek, str]]] = ..., holidays: _Optional[_Iterable[_Union[_date_pb2.Date, _Mapping]]] = ..., daily_capacity: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("id", "name", "nodes", "allocation_rules")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_RULES_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    nodes: _containers.RepeatedScalarFieldContainer[str]
    allocation_rules: _containers.RepeatedCompositeFieldContainer[AllocationRule]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., nodes: _Optional[_Iterable[str]] = ..., allocation_rules: _Optional[_Iterable[_Union[AllocationRule, _Mapping]]] = ...) -> None: ...

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
