"""The project of tiny handlers (tests/emulator/apps.py): its template, env file and serve
flags, served in-process by the behaviour tests and as a real process by a start-up test."""

from __future__ import annotations

import json
from pathlib import Path

from tests.emulator.conftest import write_template

TEMPLATE = """\
Parameters:
  Greeting:
    Type: String
    Default: hello
  Flavour:
    Type: String
    Default: plain
    AllowedValues: [plain, spicy]
Conditions:
  IsSpicy: !Equals [!Ref Flavour, spicy]
Globals:
  Function:
    Runtime: python3.12
    CodeUri: @ROOT@
    Timeout: 5
    MemorySize: 256
    Environment:
      Variables:
        GREETING: !Ref Greeting
        FROM_GLOBALS: globals
        SHARED_VAR: from-globals
        REGION_SUB: !Sub "${AWS::Region}-${Greeting}"
        JOINED: !Join [",", [a, b, !Select [1, !Split ["|", "x|y|z"]]]]
        PICKED: !If [IsSpicy, hot, mild]
        BUCKET: !Ref Bucket
        ECHO_ARN: !GetAtt EchoFunction.Arn
        OVERRIDDEN_BY_SHELL: template
Resources:
  Bucket:
    Type: AWS::S3::Bucket
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: tests.emulator.apps.echo
      MemorySize: 384
      Environment:
        Variables:
          OWN_VAR: own
          OTHER_FUNCTION: !Ref RecordFunction
      Events:
        Post:
          Type: HttpApi
          Properties: {Path: "/echo/{id}", Method: POST}
        Files:
          Type: HttpApi
          Properties: {Path: "/files/{proxy+}", Method: GET}
        Anything:
          Type: HttpApi
          Properties: {Path: /any, Method: ANY}
  BoomFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: tests.emulator.apps.boom
      Events:
        Boom:
          Type: HttpApi
          Properties: {Path: /boom, Method: GET}
  SlowFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: tests.emulator.apps.slow
      Timeout: 1
      Events:
        Slow:
          Type: HttpApi
          Properties: {Path: /slow, Method: GET}
  ShapeFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: tests.emulator.apps.shape
      Events:
        Shape:
          Type: HttpApi
          Properties: {Path: "/shape/{kind}", Method: GET}
  PowertoolsFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: tests.emulator.apps.powertools
      Events:
        Named:
          Type: HttpApi
          Properties: {Path: "/powertools/{name}", Method: GET}
  RecordFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: tests.emulator.apps.record
      Events:
        Often:
          Type: Schedule
          Properties:
            Schedule: rate(1 minute)
        Daily:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: cron(0 12 * * ? *)
"""

SHELL = {"OVERRIDDEN_BY_SHELL": "shell"}  # a variable set in the shell the emulator starts from
PARAMETER_OVERRIDES = {"Greeting": "hi"}
SCHEDULE_SCALE = 600  # rate(1 minute) fires every 0.1 s


def write_project(workdir: Path, record_file: Path) -> tuple[Path, Path]:
    """(template, env file) in `workdir`; RecordFunction appends its events to `record_file`."""
    template = write_template(workdir, TEMPLATE)
    env_file = workdir / "env.json"
    env_file.write_text(json.dumps({
        "Parameters": {"FROM_FILE": "file", "SHARED_VAR": "from-file", "RECORD_FILE": str(record_file)},
        "EchoFunction": {"OWN_VAR": "own-from-file", "MODE": "echo-mode"},
        "RecordFunction": {"MODE": "record-mode"},
    }))
    return template, env_file
