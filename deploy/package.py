"""Lambda deployment folders for the template's functions, built for the runtime they run on.

`python -m deploy.package` (what `make package`, `make package-report` and `sam build`'s
`make build-<Function>` run) gives each function of template.yaml one folder:

* the wheels of its dependency set, chosen for the function's `Runtime` and `Architectures`
  (Globals merged) whatever Python and OS run the build: pip resolves and installs with
  `--platform manylinux_2_*_<machine> --implementation cp --python-version 3.12
  --only-binary=:all:`. A requirement published only as an sdist is built into a wheel first,
  which must come out pure Python (else the build stops: it would hold code compiled for the
  builder). The sets come from pyproject.toml: `[project] dependencies` for every function,
  plus the extras `[tool.preview-service.package]` names for a function (the render worker's
  `render`: av, numpy, Pillow, the font). Distributions the runtime already provides
  (`provided_by_runtime`: the AWS SDK) are left out, with whatever only they require.
* what is not needed at run time stripped from the wheels: `tests` folders, type stubs and
  Cython headers, console scripts, and `.py` sources an extension module of the same name
  shadows. dist-info folders stay (jsonschema reads them).
* the project code: `shared/`, `schemas/` and the function's own `functions/<name>/`.
* everything byte-compiled for the target Python (unchecked-hash pycs, which stay valid
  whatever mtimes the zip gives the sources; Lambda's code folder is read-only, so what is not
  precompiled is compiled again at every cold start). That needs an interpreter of the
  target's version (python3.12 on PATH, pyenv's, or $TARGET_PYTHON); without one the build
  says so and ships no bytecode at all.

Resolutions and installed trees are cached under `.build-cache/` (or $PREVIEW_BUILD_CACHE):
a requirement set is resolved once per target (`--refresh` resolves again) and the installed,
stripped, compiled tree is keyed by the resolved pins (name, version, sha256) and the target,
so a rebuild with unchanged dependencies only copies.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import importlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
PYPROJECT = ROOT / "pyproject.toml"
DEFAULT_OUT = ROOT / "build" / "package"
DEFAULT_CACHE = ROOT / ".build-cache"
# Bump when what a cached tree holds changes (what is stripped, how it is compiled).
CACHE_FORMAT = 1
MB = 1_000_000
TASK_ROOT = "/var/task"  # where Lambda unpacks a function: the path compiled into its pycs
CODE = ("shared", "schemas")  # project code every function gets, besides functions/<its folder>

# glibc of each runtime's OS: Amazon Linux 2 up to python3.11, Amazon Linux 2023 from python3.12.
_GLIBC_MINOR = {"python3.8": 26, "python3.9": 26, "python3.10": 26, "python3.11": 26}
_AL2023_GLIBC_MINOR = 34
_MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """The build cannot go on; the message says why and what to do."""


def say(line: str) -> None:
    print(f"package: {line}", flush=True)


# --------------------------------------------------------------------------- what to build


@dataclass(frozen=True)
class Target:
    """What a function runs on: its Lambda runtime and architecture."""

    runtime: str  # python3.12
    architecture: str  # x86_64 or arm64

    def __post_init__(self) -> None:
        if not re.fullmatch(r"python3\.\d+", self.runtime):
            raise BuildError(f"Runtime {self.runtime!r} is not a Python runtime (python3.N)")
        if self.architecture not in _MACHINES:
            raise BuildError(f"Architectures {self.architecture!r}: expected one of {sorted(_MACHINES)}")

    @property
    def python_version(self) -> str:
        return self.runtime.removeprefix("python")

    @property
    def version_info(self) -> tuple[int, int]:
        major, minor = self.python_version.split(".")
        return int(major), int(minor)

    @property
    def abi(self) -> str:
        return "cp" + self.python_version.replace(".", "")

    @property
    def machine(self) -> str:
        return _MACHINES[self.architecture]

    def platforms(self) -> list[str]:
        """Every manylinux tag the runtime's glibc accepts, newest first."""
        newest = _GLIBC_MINOR.get(self.runtime, _AL2023_GLIBC_MINOR)
        tags = [f"manylinux_2_{minor}_{self.machine}" for minor in range(newest, 16, -1)]
        tags.append(f"manylinux2014_{self.machine}")
        if self.machine == "x86_64":
            tags += ["manylinux_2_12_x86_64", "manylinux2010_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64"]
        return tags

    def pip_args(self) -> list[str]:
        args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python_version]
        for tag in self.platforms():
            args += ["--platform", tag]
        return args

    def marker_environment(self) -> dict[str, str]:
        """PEP 508 marker values of the target, for the dependencies' own markers."""
        return {
            "implementation_name": "cpython", "implementation_version": f"{self.python_version}.0",
            "os_name": "posix", "platform_machine": self.machine, "platform_python_implementation": "CPython",
            "platform_release": "", "platform_system": "Linux", "platform_version": "",
            "python_full_version": f"{self.python_version}.0", "python_version": self.python_version,
            "sys_platform": "linux",
        }

    def __str__(self) -> str:
        return f"{self.runtime} {self.architecture} ({self.abi}, manylinux {self.machine})"


@dataclass(frozen=True)
class Config:
    """`[tool.preview-service.package]` of pyproject.toml."""

    budget_mb: float = 60
    provided_by_runtime: tuple[str, ...] = ()
    extras: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # logical id -> extras
    budgets: Mapping[str, float] = field(default_factory=dict)  # logical id -> MB

    @classmethod
    def load(cls, pyproject: Path = PYPROJECT) -> tuple[Config, dict[str, Any]]:
        document = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        section = document.get("tool", {}).get("preview-service", {}).get("package", {})
        functions = section.get("functions", {})
        config = cls(
            budget_mb=float(section.get("budget_mb", cls.budget_mb)),
            provided_by_runtime=tuple(_canonical(n) for n in section.get("provided_by_runtime", ())),
            extras={k: tuple(v.get("extras", ())) for k, v in functions.items()},
            budgets={k: float(v["budget_mb"]) for k, v in functions.items() if "budget_mb" in v},
        )
        return config, document["project"]


@dataclass(frozen=True)
class FunctionPlan:
    logical_id: str
    handler: str
    folder: str  # functions/<folder>
    target: Target
    extras: tuple[str, ...]
    requirements: tuple[str, ...]
    budget_mb: float
    http: bool
    environment: Mapping[str, str]

    @property
    def dependency_set(self) -> str:
        return "+".join(("core", *self.extras))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(project: Mapping[str, Any], extras: Iterable[str]) -> list[str]:
    """`dependencies` plus the named extras; an extra naming the project itself
    (`preview-service[render]`) is expanded in place."""
    own = _canonical(project["name"])
    optional = project.get("optional-dependencies", {})
    found: list[str] = []
    todo = list(project["dependencies"]) + [r for extra in extras for r in optional[extra]]
    seen_extras = set(extras)
    while todo:
        requirement = todo.pop(0)
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", requirement)
        if match and _canonical(match.group(1)) == own:
            for extra in (e.strip() for e in (match.group(2) or "").split(",") if e.strip()):
                if extra not in seen_extras:
                    seen_extras.add(extra)
                    todo.extend(optional[extra])
            continue
        if requirement not in found:
            found.append(requirement)
    return found


def _literal(value: Any, what: str) -> Any:
    if isinstance(value, dict):
        raise BuildError(f"{what} must be a literal in the template to build for it, not {value!r}")
    return value


def plans(template: Path = TEMPLATE, pyproject: Path = PYPROJECT) -> list[FunctionPlan]:
    """Every function of the template, with what its folder must hold."""
    from local.template import load_template, read_document

    config, project = Config.load(pyproject)
    document = read_document(template)
    globals_ = (document.get("Globals") or {}).get("Function") or {}
    loaded = load_template(template)
    found = []
    for logical_id, spec in loaded.functions.items():
        own = document["Resources"][logical_id].get("Properties") or {}
        runtime = _literal(own.get("Runtime", globals_.get("Runtime")), f"{logical_id} Runtime")
        architectures = _literal(own.get("Architectures", globals_.get("Architectures", ["x86_64"])),
                                 f"{logical_id} Architectures")
        if not runtime:
            raise BuildError(f"{logical_id} has no Runtime (in its Properties or Globals.Function)")
        if not isinstance(architectures, list) or len(architectures) != 1:
            raise BuildError(f"{logical_id} Architectures must list one architecture, not {architectures!r}")
        extras = config.extras.get(logical_id, ())
        unknown = [e for e in extras if e not in project.get("optional-dependencies", {})]
        if unknown:
            raise BuildError(f"pyproject.toml gives {logical_id} the extras {unknown}, which [project] does not define")
        found.append(FunctionPlan(
            logical_id=logical_id, handler=spec.handler, folder=spec.folder,
            target=Target(str(runtime), str(_literal(architectures[0], f"{logical_id} Architectures"))),
            extras=extras, requirements=tuple(project_requirements(project, extras)),
            budget_mb=config.budgets.get(logical_id, config.budget_mb), http=bool(spec.routes),
            environment=dict(spec.environment),
        ))
    return found


# --------------------------------------------------------------------------- the target interpreter


def _python_version(executable: str) -> tuple[int, int] | None:
    try:
        result = subprocess.run([executable, "-c", "import sys; print(sys.implementation.name, *sys.version_info[:2])"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = result.stdout.split()
    if result.returncode != 0 or len(parts) != 3 or parts[0] != "cpython":
        return None
    return int(parts[1]), int(parts[2])


def interpreter_candidates(version: str) -> list[str]:
    """Where an interpreter of `version` (3.12) may be, in the order they are tried."""
    names: list[str] = []
    if os.environ.get("TARGET_PYTHON"):
        names.append(os.environ["TARGET_PYTHON"])
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        names.append(sys.executable)
    if found := shutil.which(f"python{version}"):
        names.append(found)  # may be a pyenv shim that refuses: each is asked for its version
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    names += [str(p) for p in sorted((pyenv_root / "versions").glob(f"{version}.*/bin/python{version}"), reverse=True)]
    names += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    return list(dict.fromkeys(names))


def find_interpreter(target: Target) -> str | None:
    """A CPython of the target's version that runs here, else None."""
    for candidate in interpreter_candidates(target.python_version):
        if (os.path.isfile(candidate) or shutil.which(candidate)) and _python_version(candidate) == target.version_info:
            return candidate
    return None


def no_interpreter_note(target: Target) -> str:
    return (f"NOTE: no Python {target.python_version} interpreter found (looked at $TARGET_PYTHON, "
            f"python{target.python_version} on PATH, pyenv's versions, /usr/bin): bytecode NOT precompiled, so "
            f"Lambda compiles the sources at every cold start. Install Python {target.python_version} or set "
            f"TARGET_PYTHON to one.")


def magic_number(python: str) -> bytes:
    out = subprocess.run([python, "-c", "import importlib.util as u; print(u.MAGIC_NUMBER.hex())"],
                         capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    return bytes.fromhex(out)


def compile_tree(python: str, root: Path, parts: Sequence[str] = (), log: Log = say) -> None:
    """Byte-compile `root` (or its `parts`) with `python`, as found under /var/task."""
    paths = [str(root / p) for p in parts] if parts else [str(root)]
    command = [python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
               "-s", str(root), "-p", TASK_ROOT, *paths]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        failed = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if line.strip()]
        log(f"WARNING: {len(failed)} lines of compile errors (these files would fail at import too):")
        for line in failed[:20]:
            log(f"  {line}")


# --------------------------------------------------------------------------- pip


def _run_pip(args: Sequence[str], log: Log) -> tuple[int, str]:
    """pip of this interpreter, its output passed on line by line (and returned)."""
    command = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--progress-bar", "off"]
    env = {**os.environ, "PIP_NO_INPUT": "1", "PYTHONUNBUFFERED": "1"}
    lines: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            lines.append(line)
            # pip's warnings about index locations of the machine's own configuration are noise here
            if line and "is ignored: it is neither a file nor a directory" not in line:
                log(f"  pip: {line}")
    return process.returncode, "\n".join(lines)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:20]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_WHEEL_NAME = re.compile(r"^(?P<name>.+?)-(?P<version>[^-]+)(?:-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)"
                         r"-(?P<plat>[^-]+)\.whl$")


def build_pure_wheel(spec: str, wheelhouse: Path, log: Log) -> Path:
    """A wheel of a requirement published only as an sdist; refused unless it is pure Python."""
    log(f"{spec} has no wheel on the index: building one from its sdist (must be pure Python)")
    with tempfile.TemporaryDirectory(prefix="wheel-") as tmp:
        status, _ = _run_pip(["wheel", "--no-deps", "--wheel-dir", tmp, spec], log)
        wheels = list(Path(tmp).glob("*.whl"))
        if status != 0 or len(wheels) != 1:
            raise BuildError(f"cannot build a wheel of {spec} (pip wheel exited {status})")
        match = _WHEEL_NAME.match(wheels[0].name)
        if not match or match["abi"] != "none" or match["plat"] != "any":
            raise BuildError(f"{spec} has no wheel for the target, and its sdist builds {wheels[0].name}, which is "
                             "not pure Python: it would hold code compiled for this builder, not for Lambda")
        wheelhouse.mkdir(parents=True, exist_ok=True)
        return Path(shutil.move(str(wheels[0]), wheelhouse / wheels[0].name))


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    sha256: str

    def line(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


def _requirement_class() -> Any:
    """PEP 508 requirements: `packaging`'s, or the copy pip always carries."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return importlib.import_module("pip._vendor.packaging.requirements").Requirement
    return Requirement


def needed(requirements: Sequence[str], report: Sequence[Mapping[str, Any]], target: Target,
           provided: Iterable[str]) -> tuple[set[str], set[str]]:
    """The distributions of a pip report that the requirements reach on the target without going
    through one the runtime provides; and those left out."""
    requirement_class = _requirement_class()
    environment = target.marker_environment()
    provided = set(provided)
    by_name = {_canonical(item["metadata"]["name"]): item for item in report}

    def wanted(requirement: Any, extras: Iterable[str]) -> bool:
        if requirement.marker is None:
            return True
        return any(requirement.marker.evaluate({**environment, "extra": extra}) for extra in ({""} | set(extras)))

    reached: set[str] = set()
    done: set[tuple[str, frozenset[str]]] = set()
    todo = [(requirement_class(r), frozenset[str]()) for r in requirements]
    while todo:
        requirement, parent_extras = todo.pop()
        if not wanted(requirement, parent_extras):
            continue
        name = _canonical(requirement.name)
        key = (name, frozenset(requirement.extras))
        if name in provided or key in done or name not in by_name:
            continue
        done.add(key)
        reached.add(name)
        for text in by_name[name]["metadata"].get("requires_dist") or []:
            todo.append((requirement_class(text), frozenset(requirement.extras)))
    return reached, set(by_name) - reached


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One build at a time fills the cache (`sam build --parallel` runs several)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as handle:
        try:
            import fcntl
        except ImportError:  # no advisory locks here: builds must not run in parallel
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve(requirements: Sequence[str], target: Target, cache: Path, provided: Sequence[str], *,
            refresh: bool = False, log: Log = say) -> list[Pin]:
    """The pinned distributions the requirements need on the target, from the cache unless new."""
    key = _digest({"format": CACHE_FORMAT, "requirements": sorted(requirements), "runtime": target.runtime,
                   "architecture": target.architecture, "provided": sorted(provided)})
    stored = cache / "resolved" / f"{key}.json"
    if stored.exists() and not refresh:
        pins = [Pin(**p) for p in json.loads(stored.read_text())["pins"]]
        log(f"resolution cached ({len(pins)} distributions; --refresh resolves again)")
        return pins
    wheelhouse = cache / "wheelhouse"
    log(f"resolving {len(requirements)} requirements for {target}")
    for _attempt in range(10):
        with tempfile.TemporaryDirectory(prefix="resolve-") as tmp:
            report_path = Path(tmp) / "report.json"
            status, output = _run_pip(["install", "--dry-run", "--ignore-installed", "--quiet", "--report",
                                       str(report_path), "--target", str(Path(tmp) / "t"), "--find-links",
                                       str(wheelhouse), *target.pip_args(), *requirements], log)
            if status == 0:
                report = json.loads(report_path.read_text())["install"]
                break
        missing = re.search(r"No matching distribution found for (\S+)", output)
        if not missing or any(Path(w).name.lower().startswith(_canonical(missing.group(1)).replace("-", "_"))
                              for w in wheelhouse.glob("*.whl")):
            raise BuildError(f"pip could not resolve the requirements for {target} (exit {status}); see above")
        build_pure_wheel(missing.group(1), wheelhouse, log)
    else:
        raise BuildError("too many requirements without a wheel")
    keep, left_out = needed(requirements, report, target, provided)
    pins = []
    for item in report:
        name = _canonical(item["metadata"]["name"])
        if name not in keep:
            continue
        info = item["download_info"]
        sha = (info.get("archive_info", {}).get("hashes") or {}).get("sha256")
        if not sha and info["url"].startswith("file://"):
            sha = _sha256(Path(info["url"].removeprefix("file://")))
        if not sha:
            raise BuildError(f"no sha256 for {name} in pip's report")
        pins.append(Pin(name, item["metadata"]["version"], sha))
    pins.sort(key=lambda p: p.name)
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_text(json.dumps({"requirements": list(requirements), "target": str(target),
                                  "left_to_runtime": sorted(left_out), "pins": [p.__dict__ for p in pins]}, indent=1))
    log(f"resolved {len(pins)} distributions" + (f"; left to the runtime: {', '.join(sorted(left_out))}"
                                                if left_out else ""))
    return pins


# --------------------------------------------------------------------------- installed trees


_STRIP_DIRS = {"tests", "__pycache__"}
_STRIP_SUFFIXES = (".pyi", ".pxd", ".pyx")
_EXTENSION = re.compile(r"^(?P<stem>[^.]+)\.(?:cpython-\d+[^.]*|abi3)\.so$")


def strip(root: Path) -> int:
    """Remove what no import needs; the bytes removed."""
    removed = 0

    def size(path: Path) -> int:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size

    for path in [root / "bin"]:
        if path.is_dir():
            removed += size(path)
            shutil.rmtree(path)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here.name.endswith(".dist-info"):
            dirnames[:] = []
            continue
        for name in [d for d in dirnames if d in _STRIP_DIRS]:
            removed += size(here / name)
            shutil.rmtree(here / name)
            dirnames.remove(name)
        shadowing = {m["stem"] for f in filenames if (m := _EXTENSION.match(f))}
        for name in filenames:
            # A .py beside an extension module of the same name is never imported (extensions win).
            if name.endswith(_STRIP_SUFFIXES) or (name.endswith(".py") and name[:-3] in shadowing):
                removed += (here / name).stat().st_size
                (here / name).unlink()
    return removed


def _has_debug_sections(path: Path) -> bool:
    """Whether an ELF file carries .debug* sections (64-bit little-endian, as manylinux is)."""
    try:
        with path.open("rb") as handle:
            header = handle.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
                return False
            shoff = int.from_bytes(header[0x28:0x30], "little")
            shentsize = int.from_bytes(header[0x3A:0x3C], "little")
            shnum = int.from_bytes(header[0x3C:0x3E], "little")
            shstrndx = int.from_bytes(header[0x3E:0x40], "little")
            if not shoff or not shnum or shstrndx >= shnum:
                return False
            handle.seek(shoff)
            table = handle.read(shentsize * shnum)
            names_header = table[shstrndx * shentsize:(shstrndx + 1) * shentsize]
            handle.seek(int.from_bytes(names_header[0x18:0x20], "little"))
            names = handle.read(int.from_bytes(names_header[0x20:0x28], "little"))
    except OSError:
        return False
    for i in range(shnum):
        offset = int.from_bytes(table[i * shentsize:i * shentsize + 4], "little")
        if names[offset:offset + 6] == b".debug":
            return True
    return False


def elf_strip_tool(machine: str | None = None) -> str | None:
    """A `strip` that handles ELF files of `machine` (aarch64, x86_64; default: this one's): the
    GNU binutils of that machine or LLVM's (which reads every architecture), else None (macOS'
    own reads no ELF at all)."""
    names = ["strip", "llvm-strip"]
    if machine and machine != platform.machine():
        # The host's GNU strip reads only its own architecture's files.
        names = [f"{machine}-linux-gnu-strip", "llvm-strip"]
    for name in names:
        tool = shutil.which(name)
        if tool:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                version = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30).stdout
                if "GNU" in version or "LLVM" in version:
                    return tool
    return None


def strip_debug_info(root: Path, log: Log, machine: str | None = None) -> int:
    """Remove the debugging sections of shared libraries (never needed to run them); the bytes
    removed. Without a tool for the target's architecture they stay, with a note."""
    files = [p for p in root.rglob("*.so*") if p.is_file() and not p.is_symlink() and _has_debug_sections(p)]
    if not files:
        return 0
    tool = elf_strip_tool(machine)
    if tool is None:
        log(f"NOTE: no ELF strip tool for {machine or platform.machine()} (GNU binutils of that machine or "
            f"llvm-strip) found: {len(files)} shared libraries keep their debugging sections")
        return 0
    before = sum(p.stat().st_size for p in files)
    for start in range(0, len(files), 100):
        result = subprocess.run([tool, "--strip-debug", *map(str, files[start:start + 100])], capture_output=True,
                                text=True)
        if result.returncode != 0:
            first = (result.stderr.strip().splitlines() or ["no message"])[0]
            log(f"NOTE: {Path(tool).name} failed on some shared libraries, which keep their debugging sections: "
                f"{first}")
    return before - sum(p.stat().st_size for p in files)


@dataclass(frozen=True)
class Site:
    """An installed, stripped (and maybe compiled) dependency tree in the cache."""

    path: Path
    pins: tuple[Pin, ...]
    compiled_with: str | None  # the interpreter that compiled it, None: not compiled


def site(requirements: Sequence[str], target: Target, *, cache: Path = DEFAULT_CACHE,
         provided: Sequence[str] = (), python: str | None = None, refresh: bool = False, log: Log = say) -> Site:
    """The dependency tree of `requirements` on `target`: from the cache, else installed now."""
    cache = cache.resolve()
    with _locked(cache):
        pins = resolve(requirements, target, cache, provided, refresh=refresh, log=log)
        key = _digest({"format": CACHE_FORMAT, "pins": [p.line() for p in pins], "runtime": target.runtime,
                       "architecture": target.architecture})
        dest = cache / "site" / key
        info_path = dest / ".build-info.json"
        if info_path.exists():
            info = json.loads(info_path.read_text())
            if info.get("compiled_with") is None and python:
                log(f"cached tree {key} had no bytecode: compiling it with {python}")
                compile_tree(python, dest, log=log)
                info["compiled_with"] = python
                info_path.write_text(json.dumps(info, indent=1))
            log(f"dependencies cached: {len(pins)} distributions in {dest.relative_to(cache.parent)}")
            return Site(dest, tuple(pins), info.get("compiled_with"))
        started = time.perf_counter()
        tmp = dest.with_name(f".{key}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        pinned = tmp.with_suffix(".txt")
        pinned.write_text("".join(p.line() + "\n" for p in pins))
        log(f"installing {len(pins)} distributions for {target}")
        try:
            status, _ = _run_pip(["install", "--no-deps", "--no-compile", "--require-hashes", "--target", str(tmp),
                                  "--find-links", str(cache / "wheelhouse"), *target.pip_args(), "-r", str(pinned)],
                                 log)
            if status != 0:
                raise BuildError(f"pip install for {target} exited {status}; see above")
            removed = strip(tmp)
            log(f"stripped {removed / MB:.1f} MB (tests, stubs, headers, scripts, shadowed sources)")
            removed = strip_debug_info(tmp, log, target.machine)
            if removed:
                log(f"stripped {removed / MB:.1f} MB of debugging sections from shared libraries")
            if python:
                log(f"byte-compiling the dependencies with {python}")
                compile_tree(python, tmp, log=log)
            (tmp / ".build-info.json").write_text(json.dumps(
                {"target": str(target), "pins": [p.line() for p in pins], "compiled_with": python}, indent=1))
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            pinned.unlink(missing_ok=True)
        log(f"dependencies installed in {time.perf_counter() - started:.1f} s")
        return Site(dest, tuple(pins), python)


# --------------------------------------------------------------------------- function folders


@dataclass(frozen=True)
class Built:
    plan: FunctionPlan
    path: Path
    site: Site
    compiled_with: str | None

    @property
    def bytes(self) -> int:
        return tree_size(self.path)


def tree_size(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())


def _clear(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def assemble(plan: FunctionPlan, deps: Site, dest: Path, python: str | None, root: Path = ROOT) -> Built:
    """The function's folder: its dependency tree, then the project code (compiled)."""
    _clear(dest)
    shutil.copytree(deps.path, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".build-info.json"))
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in CODE:
        shutil.copytree(root / part, dest / part, ignore=skip)
    (dest / "functions").mkdir()
    shutil.copy2(root / "functions" / "__init__.py", dest / "functions" / "__init__.py")
    shutil.copytree(root / "functions" / plan.folder, dest / "functions" / plan.folder, ignore=skip)
    if python:
        compile_tree(python, dest, ("shared", "functions"))
    return Built(plan, dest, deps, python if python and deps.compiled_with else None)


def problems(root: Path, target: Target, magic: bytes | None) -> list[str]:
    """What would break or slow the function on its runtime: extension modules or bytecode of
    another Python or platform (magic: the target's pyc magic; None: no pyc may be there)."""
    found: list[str] = []
    for path in root.rglob("*"):
        name = path.name
        if name.endswith(".so") and (m := re.search(r"\.cpython-(\d+)([^.]*)\.so$", name)):
            if m.group(1) != target.abi[2:] or (m.group(2) and target.machine not in m.group(2)):
                found.append(f"extension for another Python or platform: {path.relative_to(root)}")
        elif name.endswith((".dylib", ".pyd")) or "darwin" in name and name.endswith(".so"):
            found.append(f"library for another OS: {path.relative_to(root)}")
        elif name.endswith(".pyc"):
            if magic is None:
                found.append(f"bytecode although no target interpreter compiled any: {path.relative_to(root)}")
            else:
                with path.open("rb") as handle:
                    if handle.read(4) != magic:
                        found.append(f"bytecode of another Python: {path.relative_to(root)}")
    return found[:50]


def build(functions: Sequence[str] | None = None, out: Path = DEFAULT_OUT, *, into: Path | None = None,
          cache: Path | None = None, refresh: bool = False, python: str | None = None, template: Path = TEMPLATE,
          pyproject: Path = PYPROJECT, log: Log = say) -> list[Built]:
    """Build the named functions (logical ids; all when None) under `out/<LogicalId>`, or the
    single one into `into` (sam build's ARTIFACTS_DIR)."""
    started = time.perf_counter()
    cache = cache or Path(os.environ.get("PREVIEW_BUILD_CACHE") or DEFAULT_CACHE)
    config, _ = Config.load(pyproject)
    every = plans(template, pyproject)
    chosen = every if not functions else [p for p in every if p.logical_id in functions]
    unknown = set(functions or ()) - {p.logical_id for p in every}
    if unknown:
        raise BuildError(f"no such function in {template.name}: {', '.join(sorted(unknown))} "
                         f"(there are {', '.join(p.logical_id for p in every)})")
    if into is not None and len(chosen) != 1:
        raise BuildError("--into builds exactly one function")
    interpreters: dict[Target, str | None] = {}
    sites: dict[tuple[tuple[str, ...], Target], Site] = {}
    built: list[Built] = []
    for plan in chosen:
        if plan.target not in interpreters:
            interpreters[plan.target] = python or find_interpreter(plan.target)
            found = interpreters[plan.target]
            log(f"target {plan.target}: " + (f"bytecode compiled with {found}" if found else
                                             no_interpreter_note(plan.target)))
        compiler = interpreters[plan.target]
        set_key = (plan.requirements, plan.target)
        if set_key not in sites:
            log(f"dependency set {plan.dependency_set} ({len(plan.requirements)} requirements)")
            sites[set_key] = site(plan.requirements, plan.target, cache=cache, provided=config.provided_by_runtime,
                                  python=compiler, refresh=refresh, log=log)
        dest = into if into is not None else out / plan.logical_id
        step = time.perf_counter()
        result = assemble(plan, sites[set_key], dest, compiler)
        issues = problems(dest, plan.target, magic_number(compiler) if compiler else None)
        if issues:
            raise BuildError(f"{plan.logical_id}: " + "; ".join(issues))
        size = result.bytes / MB
        verdict = "within" if size <= plan.budget_mb else "OVER"
        log(f"{plan.logical_id}: {size:.1f} MB unzipped ({verdict} its {plan.budget_mb:g} MB budget) in "
            f"{time.perf_counter() - step:.1f} s -> {dest}")
        built.append(result)
    log(f"built {len(built)} function(s) in {time.perf_counter() - started:.1f} s")
    return built


# --------------------------------------------------------------------------- the report


def _owners(root: Path) -> dict[str, str]:
    """Top-level names in a folder -> the distribution that installed them (from RECORD)."""
    owners: dict[str, str] = {}
    for dist_info in root.glob("*.dist-info"):
        dist = dist_info.name.removesuffix(".dist-info").rsplit("-", 1)[0]
        owners[dist_info.name] = dist
        record = dist_info / "RECORD"
        if not record.exists():
            continue
        with record.open(newline="") as handle:
            for row in csv.reader(handle):
                if row and not row[0].startswith(".."):
                    owners.setdefault(row[0].split("/")[0], dist)
    for part in (*CODE, "functions"):
        owners[part] = "(project code)"
    return owners


def biggest(root: Path, count: int = 5) -> list[tuple[str, int]]:
    owners = _owners(root)
    sizes: dict[str, int] = {}
    for child in root.iterdir():
        owner = owners.get(child.name) or _EXTENSION.sub(r"\g<stem>", child.name).removesuffix(".py")
        sizes[owner] = sizes.get(owner, 0) + (tree_size(child) if child.is_dir() else child.stat().st_size)
    return sorted(sizes.items(), key=lambda item: -item[1])[:count]


def report(built: Sequence[Built]) -> tuple[str, bool]:
    """The size table (unzipped, as Lambda counts its 262 MB limit) and whether all are within budget."""
    lines = [f"{'function':<22} {'set':<12} {'unzipped':>9} {'budget':>7}  result  biggest (MB)",
             f"{'-' * 22} {'-' * 12} {'-' * 9} {'-' * 7}  ------  {'-' * 40}"]
    passed = True
    for item in built:
        size = item.bytes / MB
        ok = size <= item.plan.budget_mb
        passed &= ok
        top = ", ".join(f"{name} {b / MB:.1f}" for name, b in biggest(item.path))
        lines.append(f"{item.plan.logical_id:<22} {item.plan.dependency_set:<12} {size:7.1f} MB "
                     f"{item.plan.budget_mb:4g} MB  {'PASS' if ok else 'MISS':<6}  {top}")
    compiled = {b.compiled_with for b in built}
    lines.append("bytecode: " + ("NOT precompiled (no target interpreter found)" if None in compiled else
                                 f"precompiled with {', '.join(sorted(str(c) for c in compiled))}"))
    return "\n".join(lines), passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.package", description=__doc__.splitlines()[0])
    parser.add_argument("--function", "-f", action="append", metavar="LOGICAL_ID",
                        help="build this function only (repeatable; default: every function of the template)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder to build each function under, as OUT/<LogicalId> (default: "
                             f"{DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--into", type=Path, metavar="DIR", help="build the one --function into DIR (sam build's "
                                                                 "ARTIFACTS_DIR)")
    parser.add_argument("--report", action="store_true",
                        help="print sizes, budgets and the biggest packages; exit 1 when one misses its budget")
    parser.add_argument("--refresh", action="store_true", help="resolve the requirements again (newer releases)")
    parser.add_argument("--cache", type=Path, help="cache folder (default: $PREVIEW_BUILD_CACHE or .build-cache)")
    parser.add_argument("--python", help="the target-version interpreter to byte-compile with (default: found)")
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    args = parser.parse_args(argv)
    try:
        built = build(args.function, args.out, into=args.into, cache=args.cache, refresh=args.refresh,
                      python=args.python, template=args.template)
    except BuildError as exc:
        print(f"package: error: {exc}", file=sys.stderr)
        return 2
    if args.report:
        table, passed = report(built)
        print()
        print(table)
        return 0 if passed else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
