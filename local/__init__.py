"""The local emulator: serves template.yaml's routes over HTTP, fires schedules, runs the worker.

In layers, each module importing only modules listed below it:

    __main__     the command line: `serve` and `invoke` with their flags
    serve        `serve`: the socket bound, Redis up, then one server or the reload supervisor
    reload       `serve --reload`: child processes replaced when the code changes
    invoke       `invoke`: one function called once with an event
    launch       one server generation: environment applied, handlers imported, app on uvicorn
    startup      what every command prepares: arguments, template + environment, Redis, logging
    preview      this service's extras around the gateway: artifact links, /metrics, the
                 long-running render worker, the kick as a local async invoke
    server       the gateway app, generic: routes, payload 2.0, API key or IAM, docs, schedules
    runtime      the template's functions in this process, with a deadline or asynchronously
    events       API Gateway and EventBridge events, the function's answer as HTTP, the context
    openapi      the OpenAPI document and docs page of the template's routes
    sigv4        IAM authorization: a request's SigV4 signature checked against local credentials
    environment  each function's variables in SAM's order, and the one of the process
    template     the template's functions, routes and schedules (Globals merged)
    intrinsics   CloudFormation's intrinsic functions and parameters, with local stand-ins
    samconfig    SAM's parameter override forms and samconfig.toml
    schedules, isolation, redis_embed, redis_cluster, redis_server, errors: the leaves
                 (redis_cluster: a local 3 + 3 node Redis Cluster, `python -m local.redis_cluster`)
"""
