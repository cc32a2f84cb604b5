"""The house's floors, read from the imports (docs/ARCHITECTURE.md, "Layers"):
``wire`` imports nothing of ours; ``source_script`` and ``receiver`` only ``wire``; the
launcher (``image_build`` outside ``dev``) only ``wire`` and the receiver's public identity
module; the development tooling (``image_build.dev``, ``bench``) anything. No import of
ours sits inside a function, except the declared lazy seams below, each for a reason."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = ("wire", "source_script", "receiver", "image_build", "bench", "tests")

# (importing module, imported prefix): why it is imported inside a function
SEAMS = {
    ("source_script.allinone", "image_build"):
        "the all-in-one source launches and finishes; the cloud SDK is optional there",
    ("receiver.cloudimage", "image_build"):
        "the receiver makes the image with its RAM role; the cloud SDK loads only then",
    ("image_build.cli", "image_build.dev"):
        "`--provider local build-image` builds the appliance with the dev tooling",
}


def part(module):
    if module.startswith(("image_build.dev", "bench")):
        return "dev"
    if module.startswith("image_build"):
        return "launcher"
    return module.split(".")[0]


def allowed(src, dst):
    return {
        "wire": lambda d: d.startswith("wire"),
        "source_script": lambda d: d.startswith(("wire", "source_script")),
        "receiver": lambda d: d.startswith(("wire", "receiver")),
        "launcher": lambda d: d.startswith(("wire", "receiver.identity"))
        or part(d) == "launcher",
        "dev": lambda d: True,
    }[part(src)](dst)


def module_name(path):
    parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path):
    """[(imported module, line, inside a function)] of our own packages."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names = [child.module + "." + a.name for a in child.names]
            for name in names:
                if name.split(".")[0] in OURS:
                    out.append((name, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return out


def walk():
    for top in OURS[:-1]:
        for folder, _dirs, files in os.walk(os.path.join(ROOT, top)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    yield module_name(path), path


def seam(src, dst):
    return any(src == s and dst.startswith(d) for s, d in SEAMS)


def problems():
    found = []
    for src, path in walk():
        for dst, line, in_function in imports(path):
            where = "%s:%d" % (os.path.relpath(path, ROOT), line)
            if in_function and not seam(src, dst):
                found.append("%s imports %s inside a function" % (where, dst))
            elif not in_function and seam(src, dst):
                found.append("%s imports %s at the top: a seam stays lazy" % (where, dst))
            elif not allowed(src, dst) and not seam(src, dst):
                found.append("%s (%s) imports %s (%s)" % (where, part(src), dst, part(dst)))
    return found


def test_every_import_respects_the_layers():
    assert problems() == []


def test_the_rules_catch_what_they_forbid():
    assert not allowed("receiver.steps", "source_script.push")
    assert not allowed("wire.parsers", "receiver.state")
    assert not allowed("source_script.push", "receiver.tls")
    assert not allowed("image_build.launch", "receiver.tls")
    assert allowed("image_build.launch", "receiver.identity")
    assert not allowed("image_build.finish", "image_build.dev.appliance")
    assert allowed("image_build.dev.demo", "tests.fakecloud.server")
    assert allowed("bench.phases", "tests.helpers.e2e")
    assert not seam("receiver.steps", "image_build.finish")
