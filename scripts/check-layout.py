#!/usr/bin/env python3
"""Fails when a Swift file under Sources/ is over 400 lines or a function over 60, or when a
Redis command is spelled outside Sources/AdWorkerRedis (`RedisCommand("...` anywhere else).

A function runs from the line that declares it (`func`, `init`, `deinit`) to the line
that closes its body; braces inside string literals and comments are not counted."""
import pathlib
import re
import sys

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
REDIS_BOUNDARY = "Sources/AdWorkerRedis/"
SPELLED_COMMAND = re.compile(r'RedisCommand\(\s*"')
DECLARATION = re.compile(r"^\s*(?:@[\w()\". ,:]+\s+)*(?:(?:public|private|internal|fileprivate|package|static|final|override|mutating|nonmutating|nonisolated|convenience|required|async|dynamic|@\w+(?:\([^)]*\))?)\s+)*(?:func\s|init[?!]?\s*[(<]|deinit\b)")


def code_only(line: str) -> str:
    """The line without string literals and a trailing // comment."""
    line = re.sub(r'"(?:\\.|[^"\\])*"', '""', line)
    return line.split("//", 1)[0]


def long_functions(path: pathlib.Path):
    lines = path.read_text().splitlines()
    in_block_comment = False
    in_multiline_string = False
    open_functions = []  # (start line, name, depth the body opened at)
    depth = 0
    for number, raw in enumerate(lines, 1):
        line = raw
        if in_multiline_string:
            if '"""' in line:
                in_multiline_string = False
                line = line.split('"""', 1)[1]
            else:
                continue
        if '"""' in line:
            head, _, rest = line.partition('"""')
            if '"""' not in rest:
                in_multiline_string = True
            line = head
        if in_block_comment:
            if "*/" in line:
                in_block_comment = False
                line = line.split("*/", 1)[1]
            else:
                continue
        if "/*" in line and "*/" not in line:
            in_block_comment = True
            line = line.split("/*", 1)[0]
        code = code_only(line)
        if DECLARATION.match(code):
            open_functions.append([number, raw.strip()[:80], depth, False])
        for character in code:
            if character == "{":
                depth += 1
                for function in open_functions:
                    if not function[3] and function[2] + 1 == depth:
                        function[3] = True
            elif character == "}":
                depth -= 1
                while open_functions and open_functions[-1][3] and depth == open_functions[-1][2]:
                    start, name, _, _ = open_functions.pop()
                    length = number - start + 1
                    if length > MAX_FUNCTION_LINES:
                        yield start, length, name
        # A declaration without a body (a protocol requirement) never opens one.
        if open_functions and not open_functions[-1][3] and not code.rstrip().endswith((",", "(", "->", "throws", "async")) and "{" not in code and "func" in code:
            open_functions.pop()


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    failures = []
    for path in sorted((root / "Sources").rglob("*.swift")):
        count = len(path.read_text().splitlines())
        if count > MAX_FILE_LINES:
            failures.append(f"{path.relative_to(root)}: {count} lines (at most {MAX_FILE_LINES})")
        relative = str(path.relative_to(root))
        if not relative.startswith(REDIS_BOUNDARY):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if SPELLED_COMMAND.search(line):
                    failures.append(f"{relative}:{number}: a Redis command spelled outside {REDIS_BOUNDARY}: give it a typed entry point there")
        for start, length, name in long_functions(path):
            failures.append(f"{path.relative_to(root)}:{start}: a function of {length} lines (at most {MAX_FUNCTION_LINES}): {name}")
    for failure in failures:
        print(failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
