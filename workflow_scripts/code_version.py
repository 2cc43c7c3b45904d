"""The version of the library code a rule script runs: a hash of the source of every ``workflow_scripts`` module it
imports, directly or through other modules (static imports, found with :mod:`ast`, never by importing).

Rules pass it as a ``params`` entry (``code=code_version("steps/hemmati22/detect.py")`` in ``rules/common.smk``),
so Snakemake's params trigger reruns exactly the jobs whose step imports a module that changed, and no others.
Snakemake tracks a ``script:`` file itself, but not the modules it imports. Our own code rather than a library:
no kept package walks a source tree's imports without executing them (modulefinder runs the import machinery
over every third-party package too).
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

PACKAGE = "workflow_scripts"
ROOT = Path(__file__).resolve().parent  # the package folder


def _module_file(module: str) -> Path | None:
    """The source file of a ``workflow_scripts`` module (package ``__init__`` or plain module), if any."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    parts = module.split(".")[1:]
    if not parts:
        return ROOT / "__init__.py"
    rel = Path(*parts)
    for candidate in (ROOT / rel / "__init__.py", ROOT / rel.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    rel = path.resolve().relative_to(ROOT).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def _imports(path: Path) -> tuple[str, ...]:
    """The ``workflow_scripts`` modules one file imports (``from x import y`` gives x and, where it is one, x.y)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    try:
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    except ValueError:  # a file outside the package
        package = PACKAGE
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return tuple(sorted(m for m in found if _module_file(m) is not None))


def imported_files(script: str | Path) -> list[Path]:
    """``script`` and every ``workflow_scripts`` source file it reaches by imports, parents' ``__init__`` included."""
    start = Path(script).resolve()
    seen: dict[Path, None] = {start: None}
    todo = [start]
    while todo:
        path = todo.pop()
        deps = [_module_file(m) for m in _imports(path)]
        try:  # importing a.b.c runs a/__init__ and a/b/__init__ too
            name = _module_name(path)
            parts = name.split(".")
            deps += [_module_file(".".join(parts[:i])) for i in range(1, len(parts))]
        except ValueError:
            pass
        for dep in deps:
            if dep is not None and dep not in seen:
                seen[dep] = None
                todo.append(dep)
    return sorted(seen)


def _digest(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        try:
            name = str(path.relative_to(ROOT.parent))
        except ValueError:
            name = path.name
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def code_version(script: str | Path) -> str:
    """Short SHA-256 over the relative paths and contents of :func:`imported_files` of ``script``."""
    return _digest(imported_files(script))


def modules_version(modules: Iterable[str]) -> str:
    """The same hash over the ``workflow_scripts`` modules named (others, e.g. torch's, are ignored) and every
    module they import."""
    files = [_module_file(m) for m in modules]
    return _digest(p for f in files if f is not None for p in imported_files(f))
