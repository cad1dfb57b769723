"""Static audit of the project's code: no eval/exec or shell-string execution in Python, every torch.load with
weights_only=True, and in the shell scripts no `eval` and no unquoted expansion (a value with a space or a
glob would be split or expanded). The checkers are tested on small samples first, so they can fail."""
import ast
import glob
import os
import re
from typing import List, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------- Python


def python_findings(source: str) -> List[str]:
    """Calls that run strings as code or through a shell, and torch.load without weights_only=True."""
    findings = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        keywords = {k.arg: k.value for k in node.keywords}
        if isinstance(func, ast.Name) and name in ("eval", "exec"):
            findings.append(f"line {node.lineno}: {name}()")
        elif owner == "os" and name in ("system", "popen"):
            findings.append(f"line {node.lineno}: os.{name}()")
        elif "shell" in keywords and not (isinstance(keywords["shell"], ast.Constant) and keywords["shell"].value is False):
            findings.append(f"line {node.lineno}: shell=")
        elif owner == "torch" and name == "load":
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                findings.append(f"line {node.lineno}: torch.load without weights_only=True")
    return findings


def test_python_checker_catches_samples():
    bad = "eval(x)\nexec(y)\nos.system(c)\nsubprocess.run(c, shell=True)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
    assert len(python_findings(bad)) == 6
    good = "model.eval()\nsubprocess.run(['a', b])\ntorch.load(p, weights_only=True)\nsubprocess.run(c, shell=False)\n"
    assert python_findings(good) == []


def _project_python_files() -> List[str]:
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in ("tests", "output", "data", "__pycache__")]
        files += [os.path.join(dirpath, f) for f in filenames if f.endswith(".py")]
    return sorted(files)


def test_project_python_has_no_code_execution_of_strings():
    findings = {}
    for path in _project_python_files():
        with open(path, encoding="utf-8") as f:
            found = python_findings(f.read())
        if found:
            findings[os.path.relpath(path, ROOT)] = found
    assert findings == {}


# ---------------------------------------------------------------- shell

_SAFE_SPECIAL = re.compile(r"\$[#?$!]")
# `${ARR[@]+"${ARR[@]}"}`: the `set -u`-proof way to expand a possibly empty array (its items stay quoted)
_EMPTY_ARRAY_IDIOM = re.compile(r'\$\{(\w+)\[@\]\+"\$\{\1\[@\]\}"\}')
_ASSIGNMENT_WORD = re.compile(r"(?:local\s+)?[A-Za-z_]\w*(?:\[[^\]]*\])?\+?=$")


def _matching(text: str, start: int, opening: str, closing: str) -> int:
    """Index just after the `closing` that balances the `opening` at `start` (quotes inside are skipped)."""
    depth, i, quote = 0, start, None
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c == "\\":
            i += 1
        elif c in "'\"":
            quote = c
        elif text.startswith(opening, i):
            depth += 1
            i += len(opening) - 1
        elif text.startswith(closing, i):
            depth -= 1
            if depth == 0:
                return i + len(closing)
            i += len(closing) - 1
        i += 1
    raise ValueError(f"unbalanced {opening!r} at offset {start}")


def shell_findings(text: str) -> List[Tuple[int, str]]:
    """(line, snippet) of each `eval` command and each expansion outside double quotes that bash would
    word-split or glob: not in an assignment, not inside [[ ]] or $(( )), not the empty-array idiom."""
    findings = []

    def scan(start: int, end: int) -> None:
        i, in_double, word_start, in_test = start, False, start, False
        while i < end:
            c = text[i]
            line = text.count("\n", 0, i) + 1
            if not in_double and c in " \t\n;|&()<>":
                word_start = i + 1
                i += 1
                continue
            if not in_double and c == "#" and i == word_start:
                i = text.find("\n", i) if "\n" in text[i:end] else end
                continue
            if c == "\\":
                i += 2
                continue
            if not in_double and c == "'":
                i = text.index("'", i + 1) + 1
                continue
            if c == '"':
                in_double = not in_double
                i += 1
                continue
            if not in_double and text.startswith("[[", i) and i == word_start:
                in_test = True
            if in_test and text.startswith("]]", i):
                in_test = False
            if not in_double and text.startswith("eval", i) and i == word_start and text[i + 4:i + 5] in (" ", "\t"):
                findings.append((line, "eval"))
            if c != "$":
                i += 1
                continue
            if text.startswith("$((", i):
                i = _matching(text, i + 1, "(", ")")
                continue
            if text.startswith("$(", i):
                after = _matching(text, i + 1, "(", ")")
                scan(i + 2, after - 1)  # a command substitution has its own quoting
            elif text.startswith("${", i):
                after = _matching(text, i + 1, "{", "}")
            elif _SAFE_SPECIAL.match(text, i):
                after = i + 2
            else:
                after = re.compile(r"\$(\w+|.)").match(text, i).end()
            idiom = _EMPTY_ARRAY_IDIOM.match(text, i)
            if idiom:
                after = idiom.end()
            safe = in_double or in_test or idiom or _SAFE_SPECIAL.match(text, i) or \
                _ASSIGNMENT_WORD.match(text[word_start:i])
            if not safe:
                findings.append((line, text[i:after]))
            i = after

    scan(0, len(text))
    return findings


def test_shell_checker_catches_samples():
    bad = 'rm -rf $DIR\ncp "$a" ${b}\necho $(ls $x)\neval "$cmd"\nfor f in $LIST; do :; done\n'
    assert [snippet for _, snippet in shell_findings(bad)] == ["$DIR", "${b}", "$x", "$(ls $x)", "eval", "$LIST"]
    good = ('X=$(cmd "$a")\nlocal y=${1:-z}\n[[ $v =~ ^[0-9]+$ ]]\necho "$(f "$b")" "${c[@]}" $(( ${#d[@]} % 2 ))\n'
            'run ${OPTS[@]+"${OPTS[@]}"}\n# not code: $x\necho \'$y\' "$#" $?\n')
    assert shell_findings(good) == []


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "scripts", "*.sh"))),
                         ids=lambda p: os.path.basename(p))
def test_shell_scripts_quote_every_expansion(path):
    with open(path, encoding="utf-8") as f:
        assert shell_findings(f.read()) == []
