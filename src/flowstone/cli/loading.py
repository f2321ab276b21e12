"""Locating the pipeline a command works on.

A pipeline SPEC is ``package.module:attribute`` or ``path/to/file.py:attribute``. Without the
attribute, the module's only :class:`~flowstone.Pipeline` is used. The first SPEC found wins:
``--pipeline``, then ``$FLOWSTONE_PIPELINE``, then ``[tool.flowstone] pipeline`` in
``./pyproject.toml``.

A file is imported under its own name (``flows/daily.py`` is module ``daily``) with its folder on
``sys.path``, so it can import its siblings; a module name is looked up from the current folder
first, as ``python -m`` would, even when the console script runs from elsewhere.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from flowstone.errors import FlowStoneError, suggest
from flowstone.pipeline import Pipeline

PIPELINE_ENV = "FLOWSTONE_PIPELINE"

HOW_TO_POINT = (
    "Pass --pipeline package.module:attribute (or path/to/file.py:attribute), set "
    f'${PIPELINE_ENV}, or add `[tool.flowstone] pipeline = "..."` to pyproject.toml.'
)


class PipelineLoadError(FlowStoneError):
    """The pipeline cannot be located or imported."""


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    """Where a pipeline is: a module name or a ``.py`` path, and optionally an attribute."""

    target: str
    attribute: str | None
    #: Where the SPEC came from, for messages ("--pipeline", "$FLOWSTONE_PIPELINE", ...).
    source: str

    @property
    def is_path(self) -> bool:
        """Whether ``target`` is a file path rather than a module name."""
        separators = {"/", os.sep, os.altsep} - {None}
        return self.target.endswith(".py") or any(s in self.target for s in separators if s)

    def __str__(self) -> str:
        return self.target if self.attribute is None else f"{self.target}:{self.attribute}"


def find_spec(explicit: str | None, *, cwd: Path | None = None) -> PipelineSpec:
    """The SPEC from ``--pipeline``, else the environment, else ``./pyproject.toml``.

    Raises:
        PipelineLoadError: none of them names a pipeline, or pyproject.toml is unreadable.
    """
    if explicit:
        return parse_spec(explicit, "--pipeline")
    from_env = os.environ.get(PIPELINE_ENV, "").strip()
    if from_env:
        return parse_spec(from_env, f"${PIPELINE_ENV}")
    pyproject = (cwd or Path.cwd()) / "pyproject.toml"
    if pyproject.is_file():
        try:
            with pyproject.open("rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PipelineLoadError(f"Cannot read {pyproject}: {exc}.") from exc
        section = data.get("tool", {}).get("flowstone", {})
        value = section.get("pipeline") if isinstance(section, dict) else None
        if value is not None:
            if not isinstance(value, str) or not value.strip():
                raise PipelineLoadError(
                    f"[tool.flowstone] pipeline in {pyproject} must be a string such as "
                    f'"package.module:pipeline", got {value!r}.'
                )
            return parse_spec(value, str(pyproject))
    raise PipelineLoadError(f"No pipeline given. {HOW_TO_POINT}")


def parse_spec(text: str, source: str) -> PipelineSpec:
    """Split ``module:attribute`` or ``path.py:attribute``.

    Raises:
        PipelineLoadError: the text is neither a module name nor a path.
    """
    text = text.strip()
    target, sep, attribute = text.rpartition(":")
    # "C:\\flows\\daily.py" has a colon too: only a dotted identifier after it is an attribute.
    if not (sep and target and _is_dotted_name(attribute)):
        target, attribute = text, ""
    spec = PipelineSpec(target=target, attribute=attribute or None, source=source)
    if not spec.is_path and not _is_dotted_name(target):
        raise PipelineLoadError(
            f"Invalid pipeline {text!r} (from {source}): expected package.module:attribute or "
            "path/to/file.py:attribute."
        )
    return spec


def load_pipeline(spec: PipelineSpec) -> Pipeline:
    """Import the module ``spec`` names and return its pipeline.

    Raises:
        PipelineLoadError: the module cannot be found or imported, or holds no single pipeline.
        DefinitionError: the module defines an invalid pipeline (raised while importing it).
    """
    module = _import_file(spec) if spec.is_path else _import_module(spec)
    if spec.attribute is not None:
        return _attribute(module, spec)
    found: dict[int, str] = {}
    for name, value in vars(module).items():
        if isinstance(value, Pipeline) and not name.startswith("__"):
            found.setdefault(id(value), name)
    names = sorted(found.values())
    if len(names) == 1:
        pipeline = getattr(module, names[0])
        assert isinstance(pipeline, Pipeline)
        return pipeline
    if not names:
        raise PipelineLoadError(
            f"Module {module.__name__!r} ({spec.source}) defines no flowstone Pipeline. Define "
            "one (`pipeline = flowstone.Pipeline([...])`) or name it: --pipeline "
            f"{spec.target}:attribute."
        )
    choices = ", ".join(f"{spec.target}:{n}" for n in names)
    raise PipelineLoadError(
        f"Module {module.__name__!r} ({spec.source}) defines several pipelines "
        f"({', '.join(names)}). Pick one: {choices}."
    )


def _attribute(module: ModuleType, spec: PipelineSpec) -> Pipeline:
    assert spec.attribute is not None
    value: object = module
    for part in spec.attribute.split("."):
        if not hasattr(value, part):
            near = suggest(part, [n for n in dir(value) if not n.startswith("_")])
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise PipelineLoadError(
                f"Module {module.__name__!r} ({spec.source}) has no attribute "
                f"{spec.attribute!r}.{hint}"
            )
        value = getattr(value, part)
    if isinstance(value, Pipeline):
        return value
    if callable(value) and not isinstance(value, type):
        # A factory function: `package.module:create_pipeline`.
        built = _user_code(value, f"Calling {spec}")
        if isinstance(built, Pipeline):
            return built
        raise PipelineLoadError(
            f"{spec} ({spec.source}) returned {type(built).__name__}, not a flowstone Pipeline."
        )
    raise PipelineLoadError(
        f"{spec} ({spec.source}) is a {type(value).__name__}, not a flowstone Pipeline."
    )


def _import_module(spec: PipelineSpec) -> ModuleType:
    # The console script's sys.path starts with its own folder, not the current one.
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)
    name = spec.target
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise PipelineLoadError(
                f"Cannot import pipeline module {name!r} (from {spec.source}): no module named "
                f"{exc.name!r} in {cwd} or on sys.path. Run flowstone from your project's "
                "folder, install the project, or pass a file: --pipeline "
                "path/to/file.py:attribute."
            ) from exc
        raise _import_failed(name, exc) from exc
    except FlowStoneError:
        raise  # an invalid pipeline definition says what is wrong itself
    except Exception as exc:
        raise _import_failed(name, exc) from exc


def _import_file(spec: PipelineSpec) -> ModuleType:
    path = Path(spec.target).expanduser()
    path = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if not path.is_file():
        raise PipelineLoadError(
            f"Pipeline file {spec.target!r} (from {spec.source}) does not exist (looked for "
            f"{path})."
        )
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so that the file can import its siblings
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None:
        loaded_from = getattr(existing, "__file__", None)
        if loaded_from and Path(loaded_from).resolve() == path:
            return existing
        raise PipelineLoadError(
            f"Cannot import {path} as module {name!r}: a module of that name is already loaded "
            f"(from {loaded_from or 'the interpreter'}). Rename the file, or pass it as "
            "package.module:attribute."
        )
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise PipelineLoadError(f"Cannot import {path}: it is not a Python module.")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before running, as `import` does: dataclasses and pickling look modules up.
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, FlowStoneError) or not isinstance(exc, Exception):
            raise
        error = _import_failed(str(path), exc)
        if isinstance(exc, ImportError) and (path.parent / "__init__.py").exists():
            error = PipelineLoadError(
                f"{error} The file is part of a package: pass it as package.module:attribute."
            )
        raise error from exc
    return module


def _user_code(call: object, doing: str) -> object:
    assert callable(call)
    try:
        return call()
    except FlowStoneError:
        raise
    except Exception as exc:
        raise PipelineLoadError(
            f"{doing} raised {type(exc).__name__}: {exc}. Rerun with --debug for the traceback."
        ) from exc


def _import_failed(what: str, exc: BaseException) -> PipelineLoadError:
    return PipelineLoadError(
        f"Importing the pipeline module {what!r} raised {type(exc).__name__}: {exc}. Fix the "
        "module; rerun with --debug for the traceback."
    )


def _is_dotted_name(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))
