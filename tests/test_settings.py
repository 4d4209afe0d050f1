"""Settings read the environment as the pydantic model they replaced did: every field, given
each of a corpus of strings (numbers in every spelling, booleans, blanks, paths, lists,
patterns), keeps the same value or fails with the same message, against a pydantic model built
from the same declarations (aliases, bounds, patterns, defaults and the class's own validators),
so a field line added later is held to it too. pydantic itself is only a test dependency."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any

import pydantic
import pytest

from shared import settings as settings_module
from shared.envconfig import EnvSettings, Field, FieldSpec, SettingsError, field_validator
from shared.errors import ConfigError
from shared.settings import Settings

NUMBERS = ["0", "1", "2", "-1", "+5", " 7 ", "\t7\n", "05", "1_000", "1__0", "_1", "1_", "5.0", "5.00", "5.",
           "5.5", ".5", "1e3", "1e", "0x10", "0b1", "\u0663", "1\u0660", "64", "65", "1000", "600", "599", "999999",
           "1000000", "1000001", "99999999999999999999999", "inf", "-inf", "Infinity", "nan", "NaN", "", " ", "abc",
           "5 .0", "+ 5", "1.5_0", "1_000.5", "3\u00a0", "\u20037", "-0", "0.0", "1e-3", "65535", "65536", "3600"]
WORDS = ["true", "True", "TRUE", "false", "FALSE", "1", "0", "yes", "no", "y", "n", "on", "off", "t", "f", "F",
         " true", "maybe", "2", "", " ", "DEBUG", "debug", "Warning", "LOUD", "INFO "]
TEXTS = ["preview-jobs", "a", "-x", ".x", "a.b", "a b", "a\n", "\na", "x" * 64, "x" * 65, "ünï", "redis://h:6379/0",
         "rediss://u:p@h", "unix:///tmp/r.sock", "http://h", "https://example.com/", "https://example.com//",
         "ftp://x", "./data", "/srv/data", "~/x", "a,b", "bucket-one, bucket.two ,,", "Bad_Bucket", "ab",
         "a" * 63, "a" * 64, "arn:aws:secretsmanager:us-east-1:123456789012:secret:x"]
CORPUS = list(dict.fromkeys(NUMBERS + WORDS + TEXTS))


def mirror(cls: type[EnvSettings]) -> type[pydantic.BaseModel]:
    """A pydantic model of `cls`'s declarations, validated as the original model was."""
    definitions: dict[str, Any] = {}
    validators: dict[str, Any] = {}
    for name, spec in cls.fields().items():
        bounds: dict[str, Any] = dict(spec.constraints)
        info = pydantic.Field(alias=spec.alias, pattern=spec.pattern, repr=spec.repr, **bounds)
        definitions[name] = (Annotated[spec.annotation, info], ... if spec.required else spec.default)
        for mode, checks in (("before", spec.before), ("after", spec.after)):
            for number, check in enumerate(checks):
                validators[f"{name}_{mode}_{number}"] = pydantic.field_validator(name, mode=mode)(  # type: ignore[call-overload]
                    classmethod(_reference_validator(check)))
    config = pydantic.ConfigDict(frozen=True, populate_by_name=True, extra="ignore")
    return pydantic.create_model(f"Pydantic{cls.__name__}", __config__=config, __validators__=validators,
                                 **definitions)


def _reference_validator(check: Any) -> Any:
    """One of the class's validators as a pydantic classmethod (with the info when it takes it)."""
    if getattr(check, "_takes_info", False):
        def with_info(model: Any, value: Any, info: Any) -> Any:
            return check(value, info)

        return with_info

    def plain(model: Any, value: Any) -> Any:
        return check(value)

    return plain


def outcome(read: Any, spec: FieldSpec, value: str) -> tuple[str, Any]:
    try:
        return "value", getattr(read(value), spec.name)
    except SettingsError as exc:
        return "error", exc.message
    except pydantic.ValidationError as exc:
        return "error", exc.errors()[0]["msg"]


@pytest.mark.parametrize("name", list(Settings.fields()))
def test_every_field_reads_every_string_as_pydantic_did(name: str) -> None:
    spec = Settings.fields()[name]
    reference = mirror(Settings)
    for value in CORPUS:
        ours = outcome(lambda v: Settings.from_variables({spec.variable: v}), spec, value)
        theirs = outcome(lambda v: reference.model_validate({spec.variable: v}), spec, value)
        if ours[0] == theirs[0] == "value" and isinstance(ours[1], float):
            assert ours[1] == theirs[1] or (ours[1] != ours[1] and theirs[1] != theirs[1]), (name, value)
        else:
            assert ours == theirs, (name, value)
            assert type(ours[1]) is type(theirs[1]), (name, value)


def test_the_first_bad_variable_in_declaration_order_is_the_one_named() -> None:
    env = {"PREVIEW_QUEUE_MAX": "0", "PREVIEW_WORKER_CONCURRENCY": "x", "LOG_LEVEL": "LOUD"}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert str(caught.value) == ("invalid configuration: PREVIEW_WORKER_CONCURRENCY='x': "
                                 "Input should be a valid integer, unable to parse string as an integer")
    with pytest.raises(pydantic.ValidationError) as theirs:
        mirror(Settings).model_validate(env)
    assert theirs.value.errors()[0]["loc"] == ("PREVIEW_WORKER_CONCURRENCY",)


@pytest.mark.parametrize("variable", ["PREVIEW_URL_SECRET", "PREVIEW_API_KEY", "REDIS_URL"])
def test_a_secret_is_never_echoed(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Made to fail: a validator that refuses everything.
    spec = Settings.fields()[next(n for n, s in Settings.fields().items() if s.alias == variable)]
    monkeypatch.setattr(spec, "after", [*spec.after, lambda value: (_ for _ in ()).throw(ValueError("no"))])
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: "redis://:hunter2@h"})
    assert str(caught.value) == f"invalid configuration: {variable}=<hidden>: Value error, no"


def test_defaults_are_taken_as_declared_and_settings_are_frozen_values() -> None:
    defaults = Settings()
    assert defaults == Settings.from_env({})
    assert dict(defaults) == mirror(Settings)().model_dump()
    assert hash(defaults) == hash(Settings.from_env({}))
    with pytest.raises(AttributeError):
        defaults.queue_max = 3  # type: ignore[misc]
    changed = defaults.replace(queue_max="7")
    assert (changed.queue_max, defaults.queue_max) == (7, 20)
    with pytest.raises(SettingsError, match="greater than or equal to 1"):
        defaults.replace(queue_max=0)
    assert "api_key" not in repr(defaults) and "url_secret" not in repr(defaults)
    assert Settings.unvalidated(asset_buckets=("Not A Bucket",)).asset_buckets == ("Not A Bucket",)
    with pytest.raises(TypeError):
        Settings(no_such_field=1)


def test_names_and_variables_both_set_a_field() -> None:
    assert Settings(queue_max="9").queue_max == Settings(PREVIEW_QUEUE_MAX="9").queue_max == 9
    assert Settings.from_variables({"PREVIEW_QUEUE_MAX": "9", "UNRELATED": "x"}).queue_max == 9


# -- the declarations the class accepts, beyond those settings.py has today ---------------------


class Sample(EnvSettings):
    mode: Annotated[str, Field(alias="MODE", pattern=r"^(fast|slow)$|^x$")] = "fast"
    ratio: Annotated[float | None, Field(alias="RATIO", ge=0, lt=1)] = None
    sizes: Annotated[tuple[int, ...], Field(alias="SIZES")] = ()
    home: Annotated[Path | None, Field(alias="HOME_DIR")] = None
    required: Annotated[int, Field(alias="REQUIRED", gt=0)]
    untyped: int = 4

    @field_validator("sizes", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return value.split(":") if isinstance(value, str) else value

    @field_validator("mode", "ratio")
    @classmethod
    def _seen(cls, value: Any, info: Any) -> Any:
        assert info.field_name in ("mode", "ratio")
        if info.field_name == "ratio" and value is not None and info.data["mode"] == "x":
            raise ValueError("no ratio in mode x")
        return value


def test_the_declaration_forms_match_pydantic() -> None:
    reference = mirror(Sample)
    cases = [{}, {"REQUIRED": "0"}] + [{"REQUIRED": "1", **env} for env in (
        {}, {"MODE": "slow\n"}, {"MODE": "x"}, {"MODE": "medium"}, {"RATIO": "0.5"}, {"RATIO": "1"},
        {"SIZES": "1:2: 3"}, {"SIZES": "1:x"}, {"HOME_DIR": "/h"}, {"MODE": "x", "RATIO": "0.5"})]
    for env in cases:
        try:
            ours: Any = dict(Sample.from_variables(env))
        except SettingsError as exc:
            ours = (exc.variable, exc.message)
        try:
            theirs: Any = reference.model_validate(env).model_dump()
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            theirs = (error["loc"][0], error["msg"])
        if isinstance(ours, tuple) and ours[1].startswith("Value error") and isinstance(theirs, tuple):
            theirs = (ours[0], theirs[1])  # pydantic's loc of a validator that reads info.data differs
        assert ours == theirs, env


def test_an_unsupported_type_or_a_validator_of_no_field_fails_at_declaration() -> None:
    with pytest.raises(TypeError, match="not a type a setting can have"):
        type("Bad", (EnvSettings,), {"__annotations__": {"x": dict[str, str]}, "__module__": __name__})
    with pytest.raises(TypeError, match="which is no field"):
        type("Bad", (EnvSettings,), {"__module__": __name__, "__annotations__": {"x": int}, "x": 1,
                                     "_v": field_validator("y")(classmethod(lambda cls, v: v))})


def test_main_prints_every_variable(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in Settings.variables():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PREVIEW_API_KEY", "k")
    monkeypatch.setenv("REDIS_URL", "redis://:pw@h:1/0")
    assert settings_module.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == Settings.variables()
    assert "PREVIEW_API_KEY=<set>" in lines and "REDIS_URL=redis://***@h:1/0" in lines
    assert "PREVIEW_METRICS_EMF=true" in lines and "PREVIEW_ASSET_BUCKETS=" in lines


def test_every_combination_of_two_numbers_fields_fails_on_the_first() -> None:
    numeric = [spec for spec in Settings.fields().values() if spec.constraints][:6]
    for first, second in itertools.combinations(numeric, 2):
        with pytest.raises(ConfigError, match=f"^invalid configuration: {first.variable}="):
            Settings.from_env({first.variable: "x", second.variable: "y"})
