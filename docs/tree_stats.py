"""The package's shape at a commit: folders, Python files and lines under engine/, and the five
longest functions (``ast`` spans, decorators excluded; methods as Class.name). For issue 10's
closing note (the tree before and after).

Usage: python docs/tree_stats.py REV [REV ...]   (run inside the repository; reads git objects only)
"""

from __future__ import annotations

import ast
import subprocess
import sys


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def tree_stats(rev: str, root: str = "engine", top: int = 5) -> dict:
    files = [f for f in _git("ls-tree", "-r", "--name-only", rev, root).split() if f.endswith(".py")]
    folders = sorted({f.rsplit("/", 1)[0] for f in files})
    lines, spans = 0, []
    for f in files:
        text = _git("show", f"{rev}:{f}")
        lines += text.count("\n")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    owner = f"{node.name}." if isinstance(node, ast.ClassDef) else ""
                    spans.append((child.end_lineno - child.lineno + 1, f"{f}:{child.lineno} {owner}{child.name}"))
    spans.sort(key=lambda s: (-s[0], s[1]))
    return {"rev": rev, "folders": folders, "files": len(files), "lines": lines, "longest": spans[:top]}


def main(revs: list[str]) -> None:
    for rev in revs:
        s = tree_stats(rev)
        short = _git("rev-parse", "--short", rev).strip()
        print(f"### {rev} ({short}): {len(s['folders'])} folders, {s['files']} Python files, {s['lines']} lines")
        print("folders: " + ", ".join(s["folders"]))
        print("five longest functions (lines):")
        for n, where in s["longest"]:
            print(f"  {n:4d}  {where}")
        print()


if __name__ == "__main__":
    main(sys.argv[1:] or ["HEAD"])
