"""Tiny handlers for the emulator tests, wired by temporary templates: they show what the
emulator hands a function and how it treats the function's answer."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The event, the context and the variables named in ?env=A,B, as JSON."""
    names = ((event.get("queryStringParameters") or {}).get("env") or "").split(",")
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({
            "event": event,
            "context": {
                "function_name": context.function_name,
                "function_version": context.function_version,
                "invoked_function_arn": context.invoked_function_arn,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "aws_request_id": context.aws_request_id,
                "log_group_name": context.log_group_name,
                "log_stream_name": context.log_stream_name,
                "remaining_ms": context.get_remaining_time_in_millis(),
            },
            "env": {name: os.environ.get(name) for name in names if name},
        }),
    }


def boom(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise RuntimeError("secret internal detail: database password is hunter2")


def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    seconds = float((event.get("queryStringParameters") or {}).get("seconds", "1"))
    time.sleep(seconds)
    return {"statusCode": 200, "body": json.dumps({"slept": seconds})}


def shape(event: dict[str, Any], context: Any) -> Any:
    """Answers of every form a payload 2.0 function may give."""
    kind = (event.get("pathParameters") or {}).get("kind")
    if kind == "string":
        return "plain words"
    if kind == "dict":
        return {"answer": 42}
    if kind == "list":
        return [1, 2]
    if kind == "cookies":
        return {
            "statusCode": 201,
            "headers": {"x-single": "one"},
            "multiValueHeaders": {"x-multi": ["a", "b"]},
            "cookies": ["first=1; Path=/", "second=2; HttpOnly"],
            "body": "made",
        }
    if kind == "binary":
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
    if kind == "empty":
        return {"statusCode": 204}
    return {"statusCode": "not a number", "body": "broken"}


def record(event: Any, context: Any) -> dict[str, Any]:
    """Appends each event it gets to $RECORD_FILE, one JSON line each."""
    with Path(os.environ["RECORD_FILE"]).open("a") as handle:
        handle.write(json.dumps(event) + "\n")
    return {"recorded": True, "function": context.function_name}


_resolver = APIGatewayHttpResolver()


@_resolver.get("/powertools/<name>")
def _named(name: str) -> dict[str, Any]:
    time.sleep(0.05)  # a slow backend call: other requests run meanwhile
    event = _resolver.current_event
    return {"name": name, "path": event.path, "query": event.query_string_parameters}


def powertools(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A Powertools resolver, which keeps the current event in a class-wide slot."""
    return _resolver.resolve(event, context)
