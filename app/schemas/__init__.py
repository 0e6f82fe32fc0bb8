"""The public models of every resource, one per resource (``XBase`` shared fields, ``XCreate`` what a
client sends, ``XPublic`` what the service answers), each built from ORM rows in one place.

REST bodies (``response_model`` of every route), webhook payloads and CSV rows are these models; the
CSV header is a model's flat fields (:func:`csv_columns`). Verdicts, rounding and times follow
``app.vocabulary``."""

from app.schemas.admin import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyPublic,
    HealthPublic,
    ModelInfoPublic,
    ReadyPublic,
    SettingsPublic,
    WhoamiPublic,
)
from app.schemas.common import ProblemPublic, PublicModel, UtcDatetime, csv_columns, csv_values
from app.schemas.ingest import CameraCounters, CameraStatePublic, IngestStatusPublic
from app.schemas.inspections import (
    DefectDetail,
    DefectInContext,
    DefectPage,
    DefectPublic,
    InspectionAccepted,
    InspectionCreate,
    InspectionDetail,
    InspectionPage,
    InspectionPublic,
    PageBase,
    PartPublic,
    PartStation,
    ReviewCreate,
    ReviewPublic,
    TimingsPublic,
)
from app.schemas.line import MqttStatePublic
from app.schemas.stats import Counts, StatsPublic
from app.schemas.webhooks import (
    DefectReviewedEvent,
    DeliveryPage,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPublic,
    WebhookList,
    WebhookPublic,
)

__all__ = [
    "ApiKeyCreate", "ApiKeyCreated", "ApiKeyList", "ApiKeyPublic", "CameraCounters", "CameraStatePublic",
    "Counts", "DefectDetail", "DefectInContext", "DefectPage", "DefectPublic", "DefectReviewedEvent",
    "DeliveryPage", "HealthPublic", "IngestStatusPublic", "InspectionAccepted", "InspectionCreate",
    "InspectionDetail",
    "InspectionPage", "InspectionPublic", "ModelInfoPublic", "MqttStatePublic",
    "PageBase", "PartPublic", "PartStation",
    "ProblemPublic", "PublicModel", "ReadyPublic", "ReviewCreate", "ReviewPublic", "SettingsPublic",
    "StatsPublic", "TimingsPublic", "UtcDatetime", "WebhookCreate", "WebhookCreated",
    "WebhookDeliveryPublic", "WebhookList", "WebhookPublic", "WhoamiPublic", "csv_columns", "csv_values",
]
