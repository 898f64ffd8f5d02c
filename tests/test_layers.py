"""The architecture, checked: imports point down (no cycles, function-level imports included; nothing below the
command layer imports it) and no module outside runtime/ compares a backend against a backend name."""
import ast
from pathlib import Path

from fastdet_cli.runtime.registry import BACKENDS

PKG = Path(__file__).resolve().parents[1] / "fastdet_cli"

# lowest first; a module may import its own layer or lower ones (docs/architecture.md draws this)
LAYERS = [
    ("errors", "paths", "interrupt", "outputs", "lazy", "machine", "ui", "onnx_graph", "hard_swish", "distributed",
     "outcome"),
    ("runtime", "paddle_program", "paddle_quant", "environment"),
    ("det.config", "det.preprocess", "det.postprocess", "det.model", "det.draw", "det.match", "export.qdq", "train"),
    ("data",),  # generated scenes go through the model's preprocessing (data.synth.sample_inputs): above det/
    ("det.pipeline", "evaluate", "export", "fetch"),
    ("artifacts",),
    ("agreement",),
    ("compress", "inspection", "diff", "infer"),
    ("bench",),
    ("render",),  # tables, Markdown, CSV and plots from typed results
    ("api",),  # the Python API: one function per command
    ("commands", "cli", "__main__", "cli_reference"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(f: Path, mods: dict[str, Path]) -> set[str]:
    """fastdet_cli modules `f` imports anywhere (top level or inside functions)."""
    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    deps = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            deps |= {resolve(a.name.removeprefix("fastdet_cli").lstrip(".")) for a in node.names
                     if a.name.startswith("fastdet_cli")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastdet_cli"):
            base = node.module.removeprefix("fastdet_cli").lstrip(".")
            for a in node.names:
                full = f"{base}.{a.name}".lstrip(".")
                deps.add(full if full in mods else resolve(base))
    return deps - {""}


def _graph() -> dict[str, set[str]]:
    """Module → the fastdet_cli modules it imports; packages whose __init__ imports nothing are left out."""
    mods = _modules()
    graph = {m: _imports(f, mods) - {m} for m, f in mods.items() if m}
    empty = {m for m, deps in graph.items() if mods[m].name == "__init__.py" and not deps}
    return {m: deps - empty for m, deps in graph.items() if m not in empty}


def _layer(module: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and (best is None or len(n) > best[1]):
                best = (i, len(n))
    assert best is not None, f"{module} is in no layer of tests/test_layers.py: add it"
    return best[0]


def test_no_import_cycles():
    graph = _graph()
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_imports_point_down():
    upward = [f"{m} -> {d}" for m, deps in _graph().items() for d in deps
              if not d.startswith(m + ".") and _layer(d) > _layer(m)]
    assert upward == []


def test_nothing_below_commands_imports_them():
    offenders = [m for m, deps in _graph().items() if _layer(m) < _layer("commands")
                 and any(_layer(d) == _layer("commands") for d in deps)]
    assert offenders == []


def test_det_does_not_import_data():
    """det/ is the detection pipeline; datasets sit on top of it (data/dataset.py reads det/preprocess), never
    the reverse — the layer table puts data/ above every det/ module the datasets use."""
    offenders = [f"{m} -> {d}" for m, deps in _graph().items() if m.split(".")[0] == "det"
                 for d in deps if d.split(".")[0] == "data"]
    assert offenders == []
    assert all(_layer("data") > _layer(m) for m in _graph() if m.split(".")[0] == "det" and m != "det.pipeline")


def test_the_checker_sees_function_level_imports():
    mods = _modules()
    deps = _imports(PKG / "artifacts.py", mods)
    assert "export.onnx" in deps and "det.pipeline" in deps  # both imported inside functions


def _backend_literals(node) -> set[str]:
    names = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in BACKENDS:
            names.add(n.value)
    return names


def _backend_comparisons(src: str) -> list[str]:
    """Comparisons of something named like a backend against literal backend names, in source text `src`."""
    found = []
    for node in ast.walk(ast.parse(src)):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        literal = [s for s in sides if _backend_literals(s) and not isinstance(s, (ast.Name, ast.Attribute))]
        other = [ast.get_source_segment(src, s) or "" for s in sides if s not in literal]
        if literal and any("backend" in o.lower() for o in other):
            found.append(f"{node.lineno}: {ast.get_source_segment(src, node)}")
    return found


def test_no_backend_name_comparisons_outside_runtime():
    """`backend == "trt"` and `backend in ("ort", …)` belong in the backend table (runtime/registry.py)."""
    found = [f"{f.relative_to(PKG)}:{hit}" for f in PKG.rglob("*.py") if f.relative_to(PKG).parts[0] != "runtime"
             for hit in _backend_comparisons(f.read_text())]
    assert found == []


def test_the_comparison_check_can_fail():
    src = ('if backend in ("trt", "paddle-trt"):\n    pass\nif r["backend"] == "ort":\n    pass\n'
           'if fmt == "paddle":\n    pass\n')
    assert len(_backend_comparisons(src)) == 2  # the format comparison is not a backend comparison


FLAVOURS = ("tensorrt", "openvino", "onnxruntime")  # ONNX flavour names (export/targets.py), "onnxruntime" also the
# compress engine's (config.QuantEngine: .ort / .paddleslim)


def _flavour_comparisons(src: str) -> list[str]:
    """`x == "tensorrt"` / `x != "openvino"` and the like in source text `src`."""
    found = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Compare) and any(isinstance(s, ast.Constant) and s.value in FLAVOURS
                                                 for s in [node.left, *node.comparators]):
            found.append(f"{node.lineno}: {ast.get_source_segment(src, node)}")
    return found


def test_no_onnx_flavour_comparisons_outside_targets():
    """What a flavour does (symmetric int8, outputs quantized, GPU, loads the others) is a field of its row in
    export/targets.py; code reads the field, never the name."""
    found = [f"{f.relative_to(PKG)}:{hit}" for f in PKG.rglob("*.py")
             if f.relative_to(PKG).parts[0] != "runtime" and f.relative_to(PKG) != Path("export/targets.py")
             for hit in _flavour_comparisons(f.read_text())]
    assert found == []
    assert len(_flavour_comparisons('if target == "tensorrt":\n    pass\nif t != "openvino":\n    pass\n'
                                    'if engine == "onnxruntime":\n    pass\n')) == 3


def test_no_module_named_like_the_standard_library():
    """`python fastdet_cli/` (paddle.distributed.launch) puts the package folder first on sys.path: a module
    named io, inspect or eval there shadows the standard library's for every import."""
    import sys

    clash = [str(f.relative_to(PKG)) for f in PKG.rglob("*.py") if f.stem in sys.stdlib_module_names | {"eval"}]
    assert clash == []


def test_commands_go_through_the_api():
    """Every command parses its options, calls fastdet_cli.api and renders what comes back: a command imports the
    api and, besides it, only other commands, ui, errors and the renderers (render/)."""
    allowed = ("api", "ui", "errors", "render", "commands")
    graph = _graph()
    leaks = [f"{m} -> {d}" for m, deps in graph.items() if m.startswith("commands.")
             for d in deps if d.split(".")[0] not in allowed]
    assert leaks == []
    callers = [m for m in graph if m.startswith("commands.") and m != "commands.options"]
    assert callers and all("api" in graph[m] or "commands.options" in graph[m] for m in callers)


def test_backends_are_looked_up_by_name_only_at_the_door():
    """Names are resolved once (api.py; the option's choices); below it the library takes BackendSpecs."""
    door = {Path("api.py"), Path("runtime/registry.py"), Path("commands/options.py")}
    calls = [f"{f.relative_to(PKG)}:{n.lineno}" for f in PKG.rglob("*.py") if f.relative_to(PKG) not in door
             for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Call)
             and getattr(n.func, "id", getattr(n.func, "attr", None)) == "get_backend"]
    assert calls == []


def test_functions_and_modules_stay_short():
    """A function longer than 60 lines is broken at its natural steps; a module over 400 lines split by what it
    does (a newcomer reads one screen at a time)."""
    long_functions, long_modules = [], []
    for f in PKG.rglob("*.py"):
        src = f.read_text()
        if src.count("\n") > 400:
            long_modules.append(f"{f.relative_to(PKG)}: {src.count(chr(10))} lines")
        for n in ast.walk(ast.parse(src)):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60:
                long_functions.append(f"{f.relative_to(PKG)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1})")
    assert long_functions == [] and long_modules == []
