"""What the Lambda runtime gives a function's process, for running a packaged function as Lambda
would outside it (the cold-start bench, the test of the packages): the variables it sets, and the
source of a context object like the one its bootstrap passes to the handler."""

from __future__ import annotations

from pathlib import Path

LOG_STREAM = "2026/11/28/[$LATEST]0123456789abcdef"
REQUEST_ID = "8f4b2c1e-0000-4000-8000-000000000001"


def environment(function: str, task_root: Path, handler: str, *, runtime: str = "python3.12",
                memory_mb: int = 512, region: str = "us-east-1") -> dict[str, str]:
    """The variables the runtime sets (credentials aside)."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function}",
        "AWS_LAMBDA_LOG_STREAM_NAME": LOG_STREAM,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
        "LAMBDA_TASK_ROOT": str(task_root),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_HANDLER": handler,
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }


def context_source(remaining_ms: int) -> str:
    """Python source of a `Context` class with the attributes of the runtime's context object,
    read from the variables above (for a script run in the packaged folder alone)."""
    return f'''\
class Context:
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    function_version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
    invoked_function_arn = "arn:aws:lambda:" + os.environ["AWS_REGION"] + ":123456789012:function:" + function_name
    memory_limit_in_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
    aws_request_id = "{REQUEST_ID}"
    log_group_name = os.environ["AWS_LAMBDA_LOG_GROUP_NAME"]
    log_stream_name = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
    def get_remaining_time_in_millis(self):
        return {remaining_ms}
'''
