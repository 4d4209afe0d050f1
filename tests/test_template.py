"""The SAM template: clean under cfn-lint, and consistent with the code and fixtures."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest
from cfnlint.api import lint_all
from cfnlint.decode import decode

from shared.settings import Settings
from tests.conftest import EVENTS, ROOT

pytestmark = pytest.mark.usefixtures("no_sockets")

TEMPLATE = ROOT / "template.yaml"
SPEC_VARIABLES = {"REDIS_URL", "PREVIEW_QUEUE_NAME", "PREVIEW_WORKER_CONCURRENCY", "PREVIEW_QUEUE_MAX", "DATA_DIR"}


def load() -> dict:
    template, matches = decode(str(TEMPLATE))
    assert not matches, matches
    return template


def functions(template: dict) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}


@pytest.mark.slow
def test_cfn_lint_is_clean() -> None:
    # Errors and warnings fail, as on the cfn-lint command line; informational hints do not.
    problems = [m for m in lint_all(TEMPLATE.read_text()) if m.rule.id[0] in "EW"]
    assert problems == []


@pytest.mark.slow
def test_the_deployed_form_is_clean_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # What CloudFormation receives: the template after `sam package` (code in S3) and the SAM
    # transform. Linting only the SAM form misses what SAM copies through unchecked, such as
    # the policy statements.
    import json

    from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
    from samtranslator.translator.transform import transform

    class ManagedPolicies:  # the IAM list SAM would fetch: only the one the functions use
        def get_paginator(self, name: str) -> Any:
            return type("Pages", (), {"paginate": lambda self, **_: [{"Policies": [{
                "PolicyName": "AWSLambdaBasicExecutionRole",
                "Arn": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}]}]})()

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    document = json.loads(json.dumps(load()))
    document["Globals"]["Function"]["CodeUri"] = "s3://deployment-artifacts/preview-service.zip"
    deployed = transform(document, {}, ManagedPolicyLoader(ManagedPolicies()))
    assert "Transform" not in deployed and "RenderWorkerFunctionRole" in deployed["Resources"]
    problems = [m for m in lint_all(json.dumps(deployed)) if m.rule.id[0] in "EW"]
    assert problems == []


def test_every_function_handler_imports_and_has_fixtures() -> None:
    template = load()
    for logical_id, resource in functions(template).items():
        handler = resource["Properties"]["Handler"]
        module, _, attr = handler.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attr)), logical_id
        folder = module.split(".")[1]
        assert list((EVENTS / folder).glob("*.json")), f"{folder} has no fixtures"


def test_routes_match_the_spec() -> None:
    routes = set()
    for resource in functions(load()).values():
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                routes.add((event["Properties"]["Method"], event["Properties"]["Path"]))
    assert routes == {
        ("POST", "/api/preview/job"),
        ("POST", "/api/preview/jobs"),
        ("GET", "/api/preview/job/{jobId}/status"),
        ("GET", "/api/preview/job/{jobId}/artifact"),
        ("GET", "/api/preview/queue/metrics"),
        ("GET", "/api/preview/worker/health"),
        ("GET", "/api/preview/jobs"),
        ("GET", "/api/preview/job/{jobId}"),
        ("POST", "/api/preview/job/{jobId}/retry"),
        ("POST", "/api/preview/job/{jobId}/cancel"),
    }


def test_globals_carry_the_spec_variables_and_only_known_ones() -> None:
    template = load()
    variables = set(template["Globals"]["Function"]["Environment"]["Variables"])
    assert variables >= SPEC_VARIABLES
    powertools = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"}
    known = set(Settings.variables()) | powertools
    for resource in functions(template).values():
        own = resource["Properties"].get("Environment", {}).get("Variables", {})
        assert set(own) | variables <= known
    assert template["Globals"]["Function"]["Runtime"] == "python3.12"


def test_schedules_are_valid_expressions() -> None:
    schedules = {
        logical_id: event["Properties"]["Schedule"]
        for logical_id, resource in functions(load()).items()
        for event in resource["Properties"].get("Events", {}).values()
        if event["Type"] == "Schedule"
    }
    assert schedules["HealthProbeFunction"] == "rate(5 minutes)"
    expression = r"rate\(\d+ (minute|minutes|hour|hours|day|days)\)|cron\(.+\)"
    assert all(re.fullmatch(expression, s) for s in schedules.values())


def _worker_statements(asset_buckets: str) -> list[dict]:
    """The render worker's policy statements as CloudFormation would resolve them (through the
    emulator's intrinsic-function resolver), for one value of the AssetBuckets parameter."""
    from local.intrinsics import Resolver, parameter_values
    from local.template import read_document

    document = read_document(TEMPLATE)
    parameters = parameter_values(TEMPLATE, document["Parameters"], {"AssetBuckets": asset_buckets})
    resolver = Resolver(document, parameters, "eu-west-1", TEMPLATE)
    policies = document["Resources"]["RenderWorkerFunction"]["Properties"]["Policies"]
    return [s for policy in resolver.resolve(policies, "Policies") for s in policy["Statement"]]


def test_worker_policy_is_least_privilege() -> None:
    statements = _worker_statements("")
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"s3:PutObject", "s3:DeleteObject", "s3:GetObject", "s3:ListBucket"}
    writes = next(s for s in statements if "s3:PutObject" in s["Action"])
    assert writes["Resource"].endswith("/previews/*")
    assert not any(s.get("Sid") in ("ReadAssetBuckets", "ListAssetBuckets") for s in statements)

    with_assets = _worker_statements("tutorial-assets,shared-media.example")
    reads = next(s for s in with_assets if s.get("Sid") == "ReadAssetBuckets")
    assert reads["Resource"] == ["arn:aws:s3:::tutorial-assets/*", "arn:aws:s3:::shared-media.example/*"]
    lists = next(s for s in with_assets if s.get("Sid") == "ListAssetBuckets")
    assert lists["Resource"] == ["arn:aws:s3:::tutorial-assets", "arn:aws:s3:::shared-media.example"]


def test_asset_buckets_parameter_matches_the_settings_check() -> None:
    pattern = load()["Parameters"]["AssetBuckets"]["AllowedPattern"]
    for good in ("", "assets", "a-b.c,d12"):
        assert re.fullmatch(pattern, good), good
        Settings.from_env({"PREVIEW_ASSET_BUCKETS": good})
    for bad in ("a, b", "A", "a,", ",a"):
        assert not re.fullmatch(pattern, bad), bad


def test_every_alarm_notifies_the_topic_and_the_worker_keeps_its_failures() -> None:
    template = load()
    alarms = {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    assert len(alarms) >= 5
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
    worker = template["Resources"]["RenderWorkerFunction"]["Properties"]
    on_failure = worker["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure == {"Type": "SQS", "Destination": {"Fn::GetAtt": ["WorkerFailedInvocations", "Arn"]}}
    # The secret's read permission is granted to every function, for that one resource only.
    policy = template["Resources"]["RedisSecretReadPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert [s["Resource"] for s in policy] == [{"Ref": "RedisSecretArn"}]
    for resource in functions(template).values():
        assert {"Fn::If": ["HasRedisSecret", {"Ref": "RedisSecretReadPolicy"}, {"Ref": "AWS::NoValue"}]} \
            in resource["Properties"]["Policies"]
