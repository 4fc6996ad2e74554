#!/usr/bin/env python3
"""Writes every ```cpp block of README.md and docs/*.md as a translation unit to compile, so the
documented API cannot drift from the headers (xsimd's test/doc habit). Blocks fenced ```c++ are
excerpts of library code shown for reading and are not compiled.

A block of declarations (a line starting with struct, template, inline, namespace or class) is
compiled at namespace scope inside its own namespace with `using namespace qforge`; any other
block is the body of a function given the names the docs use: `w` (rows x cols floats), `rows`,
`cols`, `x` and `y` (vectors), `h` (the Hessian). Its #include lines go to the top of the file.

usage: snippets.py SOURCE_DIR OUT_DIR   (prints the files written, one per line)"""
import pathlib
import re
import sys

src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
for old in out.glob("snippet_*.cpp"):
    old.unlink()
docs = [src / "README.md"] + sorted((src / "docs").glob("*.md"))
written = []
for doc in docs:
    text = doc.read_text(encoding="utf-8")
    for n, m in enumerate(re.finditer(r"^```cpp\n(.*?)^```", text, re.S | re.M)):
        body = m.group(1)
        line = text[: m.start()].count("\n") + 2
        includes = [l for l in body.splitlines() if l.startswith("#include")]
        # include lines move to the top; blank lines keep the #line numbering right
        code = "\n".join("" if l.startswith("#include") else l for l in body.splitlines())
        declarations = re.search(r"^(struct|template|inline|namespace|class)\b", code, re.M)
        name = f"snippet_{doc.stem.lower()}_{n}"
        where = f"// {doc.relative_to(src)}:{line}\n"
        head = where + "#include <qforge/qforge.hpp>\n" + "\n".join(includes) + "\n#include <span>\n#include <vector>\n\n"
        if declarations:
            tu = head + f"namespace {name} {{\nusing namespace qforge;\n#line {line} \"{doc.relative_to(src)}\"\n{code}\n}}\n"
        else:
            tu = (head + f"void {name}(const float* w, int rows, int cols, std::vector<float>& x, std::vector<float>& y,\n"
                  f"    const std::vector<float>& h) {{\n    (void)w; (void)rows; (void)cols; (void)x; (void)y; (void)h;\n"
                  f"#line {line} \"{doc.relative_to(src)}\"\n{code}\n}}\n")
        path = out / f"{name}.cpp"
        path.write_text(tu, encoding="utf-8")
        written.append(str(path))
if not written:
    sys.exit("snippets.py: no ```cpp block found in README.md or docs/")
print("\n".join(written))
