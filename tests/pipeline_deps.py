"""What each DVC stage should declare, derived from the code; used by test_dvc_yaml.py and
the end-to-end test.

- Code: the stage's module (`python -m specdraft.stages.<stage>` in its cmd) and every
  `specdraft` module it imports, directly or through others, at module level or inside
  a function (a lazy import runs too when the stage takes that path). Found by reading
  the source (ast), so a module is counted whether or not this run imports it.
- Params: the keys a stage's process read, recorded by specdraft.config when
  SPECDRAFT_TRACE_PARAMS is set (see there), compared with the stage's `params:`.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# Keys a stage reads only under settings the local profile does not use; each names the
# setting that makes the stage read it.
CONDITIONAL = {
    "generation.vllm": "generation.engine: vllm",
}


def module_file(name: str) -> Path | None:
    p = SRC / Path(*name.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    if p.with_suffix(".py").is_file():
        return p.with_suffix(".py")
    return None


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")


def imports(name: str) -> set[str]:
    """The specdraft modules that module `name` imports (and the packages on their way)."""
    f = module_file(name)
    assert f is not None, name
    pkg = name if f.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        found: list[str] = []
        if isinstance(node, ast.Import):
            found = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            found = [base] + [f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")]
        for m in found:
            if m.split(".")[0] != "specdraft":
                continue
            parts = m.split(".")
            out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if module_file(".".join(parts[:i])))
    out.discard(name)
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(f): imports(module_name(f)) for f in sorted((SRC / "specdraft").rglob("*.py"))}


def closure(name: str, g: dict[str, set[str]] | None = None) -> set[str]:
    g = g if g is not None else graph()
    seen, todo = {name}, [name]
    while todo:
        for m in g[todo.pop()]:
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles (strongly connected components with more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def matters(path: Path) -> bool:
    """A package __init__ holding only a docstring cannot change a result."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return not all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def stage_module(cmd: str) -> str:
    words = cmd.split()
    return words[words.index("-m") + 1]


def stages(repo: Path = ROOT) -> list[Any]:
    """The resolved stages of dvc.yaml (foreach/matrix expanded), from DVC itself."""
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        return list(r.index.stages)


def code_mismatches(repo: Path = ROOT) -> list[str]:
    """Every stage's missing and extra src/specdraft deps, as messages."""
    g = graph()
    problems = []
    for st in stages(repo):
        need = {module_file(m).relative_to(ROOT).as_posix() for m in closure(stage_module(st.cmd), g)}
        need = {p for p in need if matters(ROOT / p)}
        declared = [d.def_path for d in st.deps if str(d.def_path).startswith("src/")]
        for p in sorted(need):
            if not any(p == d or p.startswith(d.rstrip("/") + "/") for d in declared):
                problems.append(f"{st.name}: missing dep {p} (imported by the stage)")
        for d in declared:
            under = [f.relative_to(ROOT).as_posix() for f in (ROOT / d).rglob("*.py")] if (ROOT / d).is_dir() \
                else [d]
            extra = [f for f in under if f not in need and matters(ROOT / f)]
            if extra:
                problems.append(f"{st.name}: extra dep {d} ({', '.join(extra)} not imported by the stage)")
    return problems


def _covered(key: str, declared: list[str]) -> bool:
    return any(key == d or key.startswith(d + ".") for d in declared)


def params_mismatches(trace_dir: Path, repo: Path) -> list[str]:
    """Compare the keys each stage process read (trace files) with its `params:`."""
    traces = {}
    for f in trace_dir.glob("*.json"):
        t = json.loads(f.read_text())
        traces[" ".join(t["argv"])] = t["keys"]
    problems = []
    for st in stages(repo):
        words = st.cmd.split()
        run = " ".join(words[words.index("-m") + 1:])
        if run not in traces:
            problems.append(f"{st.name}: no trace of its run ({run})")
            continue
        read = traces[run]
        declared = [k for d in st.deps if hasattr(d, "params") and d.params is not None for k in d.params]
        for k in read:
            if not _covered(k, declared):
                problems.append(f"{st.name}: reads params key {k} but does not declare it")
        for d in declared:
            used = any(_covered(k, [d]) or _covered(d, [k]) for k in read)
            if not used and d not in CONDITIONAL:
                problems.append(f"{st.name}: declares params key {d} but never reads it")
    return problems
