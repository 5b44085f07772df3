"""The import graph of the posterlens package: acyclic, one way (core <- caption contract <- backends and stages
<- pipeline <- report, cli), and no module reaching another through an import inside a function.

Run as a script to print the graph: `.venv/bin/python tests/test_imports.py`."""
import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from posterlens.pipeline import CAPTIONERS, STAGES

PKG = Path(__file__).resolve().parent.parent/'posterlens'


def _module(obj) -> str: return obj.__module__.rsplit('.', 1)[-1]


def declared_layers() -> dict:
    """Each module's layer, read from the declarations: a stage's `layer` for its function's module, 2 for a backend's;
    below them the contract (core 0, caption 1), above them the runner and its users (pipeline, report, cli)."""
    out = {_module(c): 2 for c in CAPTIONERS.values()}
    for st in STAGES.values(): out[_module(st.func)] = st.layer
    top = max(2, *out.values()) + 1
    return {**out, 'core': 0, 'caption': 1, 'pipeline': top, 'report': top + 1, 'cli': top + 2}


LAYERS = declared_layers()
HELPER = LAYERS['pipeline'] - 0.5   # a module neither a stage's nor a backend's (pixels): above the stages, below the pipeline


def _target(node, mods):
    "The posterlens module an import node names, if any."
    if isinstance(node, ast.ImportFrom):
        if node.level == 1 and node.module: return {node.module.split('.')[0]}
        if node.module and node.module.startswith('posterlens.'): return {node.module.split('.')[1]}
        if node.module == 'posterlens': return {a.name for a in node.names if a.name in mods}
    if isinstance(node, ast.Import): return {a.name.split('.')[1] for a in node.names if a.name.startswith('posterlens.')}
    return set()


def import_graph():
    "Module -> (modules it imports at top level, modules it imports inside functions)."
    mods = {p.stem: p for p in PKG.glob('*.py') if not p.stem.startswith('_')}
    out = {}
    for m, p in mods.items():
        tree, top, inner = ast.parse(p.read_text()), set(), set()
        for node in tree.body: top |= _target(node, mods)
        for f in ast.walk(tree):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(f): inner |= _target(node, mods)
        out[m] = (top & set(mods), inner & set(mods))
    return out


def test_no_cycle_and_one_way():
    g = import_graph()
    try: order = list(TopologicalSorter({m: top for m, (top, _) in g.items()}).static_order())
    except CycleError as e: raise AssertionError(f'import cycle: {e.args[1]}')
    assert order[0] == 'core'
    for m, (top, _) in g.items():
        for d in top: assert LAYERS.get(d, HELPER) < LAYERS.get(m, HELPER), f'{m} imports {d}, against the layering'


def test_no_imports_inside_functions():
    assert {m: sorted(inner) for m, (_, inner) in import_graph().items() if inner} == {}


if __name__ == '__main__':
    for m, (top, inner) in sorted(import_graph().items(), key=lambda kv: LAYERS.get(kv[0], HELPER)):
        print(f"{m:10} -> {', '.join(sorted(top)) or '(nothing)'}" + (f"   inside functions: {sorted(inner)}" if inner else ''))
