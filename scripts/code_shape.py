"""The shape of the code, for reviews of its structure: the largest classes
and functions of the packages, and how often code reaches into another
object's private names (`x._name`, x not self or cls).

    python scripts/code_shape.py [ROOT]     # ROOT: a checkout (default: this one)
"""
import ast, sys, pathlib, collections
root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
PKGS = ["stream", "agents", "state", "engine", "store", "api", "cli"]
classes, funcs = [], []
private = collections.Counter()
for pkg in PKGS + ["tests", "bench"]:
    for f in sorted((root / pkg).rglob("*.py")) if (root / pkg).exists() else []:
        tree = ast.parse(f.read_text())
        rel = f.relative_to(root)
        for node in ast.walk(tree):
            if pkg in PKGS:
                if isinstance(node, ast.ClassDef):
                    methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
                    classes.append((node.end_lineno - node.lineno + 1, len(methods), f"{rel}:{node.name}"))
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    funcs.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.name}"))
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = node.value
                if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                    continue
                private["tests+bench" if pkg in ("tests", "bench") else "production"] += 1
classes.sort(reverse=True); funcs.sort(reverse=True)
print("largest classes (lines, methods):", *[f"{c[2]} {c[0]} lines, {c[1]} methods" for c in classes[:3]], sep="\n  ")
print("largest functions (lines):", *[f"{f[1]} {f[0]}" for f in funcs[:3]], sep="\n  ")
print("private names reached into (attribute ._x of something not self/cls):", dict(private))
