"""Calls Hookline through the official Python SDK (svix 2.9.1) and prints
what each call answered, one JSON object per line, for tests/it/sdk.rs to
check. Usage: sdk_check.py <server url> <token> <app id> <endpoint id>.

The application's endpoint has one message that succeeded, one waiting for
a retry and one settled as failed when this runs (the Rust side set them up
and checks what the recover sent)."""

import datetime as dt
import json
import sys

from svix.api import (
    ApplicationTokenExpireIn,
    AppUsageStatsIn,
    EndpointIn,
    EnvironmentIn,
    EventTypeImportOpenApiIn,
    EventTypeIn,
    MessagePrecheckIn,
    RecoverIn,
    Svix,
    SvixOptions,
)
from svix.exceptions import HttpError, HTTPValidationError

url, token, app_id, endpoint_id = sys.argv[1:5]
svix = Svix(token, SvixOptions(server_url=url, retry_schedule=[]))
now = dt.datetime.now(dt.timezone.utc)


def call(name, fn):
    """Run one SDK call; print its answer (or its error's status and body)."""
    try:
        out = fn()
        answer = {"ok": True, "value": to_json(out)}
    except HTTPValidationError as e:
        answer = {"ok": False, "status": e.status_code, "loc": [d.loc for d in e.detail]}
    except HttpError as e:
        answer = {"ok": False, "status": e.status_code, "code": e.code, "detail": e.detail}
    print(json.dumps({"call": name, **answer}), flush=True)


def to_json(value):
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    return value


call("endpoint.recover", lambda: svix.endpoint.recover(app_id, endpoint_id, RecoverIn(since=now - dt.timedelta(days=1))))
call("endpoint.recover.15days", lambda: svix.endpoint.recover(app_id, endpoint_id, RecoverIn(since=now - dt.timedelta(days=15))))
call(
    "endpoint.create.unknown_event_type",
    lambda: svix.endpoint.create(app_id, EndpointIn(url="https://example.com/hook", event_types=["no.such.type"])),
)
call("endpoint.get_attempt_stats", lambda: svix.endpoint.get_attempt_stats(app_id, endpoint_id))
call("message.precheck", lambda: svix.message.precheck(app_id, MessagePrecheckIn(event_type="sdk.event")))
call("authentication.expire_all", lambda: svix.authentication.expire_all(app_id, ApplicationTokenExpireIn()))
call(
    "statistics.aggregate_app_stats",
    lambda: svix.statistics.aggregate_app_stats(
        AppUsageStatsIn(since=now - dt.timedelta(days=1), until=now + dt.timedelta(hours=1), app_ids=[app_id, "app_missing"])
    ),
)
call("statistics.aggregate_event_types", lambda: svix.statistics.aggregate_event_types())
spec = {"openapi": "3.1.0", "webhooks": {"py.imported": {"post": {"description": "from OpenAPI"}}}}
call("event_type.import_openapi", lambda: svix.event_type.import_openapi(EventTypeImportOpenApiIn(spec=spec)))
call("environment.export", lambda: svix.environment.export())
call(
    "environment.import_",
    lambda: svix.environment.import_(EnvironmentIn(event_types=[EventTypeIn(name="py.env", description="env")])),
)
call("connector.list", lambda: svix.connector.list())
call("destination.list", lambda: svix.destination.list(app_id))
call("integration.list", lambda: svix.integration.list(app_id))
call("streaming.stream.list", lambda: svix.streaming.stream.list())
call("ingest.source.list", lambda: svix.ingest.source.list())
