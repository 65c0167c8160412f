"""The docs run as written: docs/quickstart.md's shell blocks, verbatim, on the example shop it
creates; and every `recscope ...` line of README.md and docs/quickstart.md names a command
and options the real CLI has (what its `--help` lists).

The quickstart runs in a temporary folder with this venv's `recscope` first on PATH, as a
reader with the venv active would. Its `recscope serve` starts on a free 127.0.0.1 port (the
one change: `--port`), and its curl commands are sent there instead of port 8000.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import typer

from recscope.cli import app
from servers import Server

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "docs" / "quickstart.md"
BIN = Path(sys.executable).parent  # this venv's bin: `recscope` lives here


def shell_blocks(markdown: Path) -> list[str]:
    """The ```sh blocks of a markdown file, in order (other blocks are output or examples)."""
    return re.findall(r"^```sh\n(.*?)^```", markdown.read_text(), flags=re.S | re.M)


def command_lines(block: str) -> list[str]:
    """A block's commands, one string each: continued lines joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def run(script: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ---------------------------------------------------------------------- the quickstart, verbatim
def test_the_quickstart_runs_as_written(tmp_path):
    blocks = shell_blocks(QUICKSTART)
    serve = [b for b in blocks if "recscope serve" in b]
    calls = [b for b in blocks if b.lstrip().startswith("curl")]
    setup = [b for b in blocks if b not in serve and b not in calls]
    assert len(serve) == 1 and calls and len(setup) >= 6, "the quickstart's blocks changed shape"
    assert blocks.index(serve[0]) == len(setup) and blocks.index(calls[0]) == len(setup) + 1, "serve, then curl, last"

    for block in setup:  # write the files, train, evaluate, explain, report: each block as one script
        done = run(block, tmp_path)
        assert done.returncode == 0, f"{block}\n--- stderr:\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr
    assert (tmp_path / "runs" / "shop" / "run.json").is_file()
    assert (tmp_path / "shop-report" / "index.html").is_file()
    fields = json.loads((tmp_path / "runs" / "shop" / "run.json").read_text())["config"]["model"]["fields"]
    assert [f[0] for f in fields] == ["brand", "category", "price"]  # shop.yaml kept image_url out

    (line,) = command_lines(serve[0])
    words = shlex.split(line)
    assert words[:2] == ["recscope", "serve"], line
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    server = Server(tmp_path / words[2], *words[3:], log=tmp_path / "serve.log", env=env, ready_in=120)
    try:
        answers = []
        for call in command_lines(calls[0]):
            assert "localhost:8000" in call, call
            done = run(call.replace("localhost:8000", f"127.0.0.1:{server.port}"), tmp_path, timeout=60)
            assert done.returncode == 0, f"{call}\n{done.stderr}"
            body = json.loads(done.stdout)
            assert "error" not in body and "detail" not in body, f"{call}\n{done.stdout}"
            answers.append(body)
    finally:
        server.stop()
    before, explained, posted, after, anonymous, why = answers
    assert [i["rank"] for i in before["items"]] == [1, 2, 3] and before["model_version"]
    assert all(i["sentence"] and i["explanation"]["item_id"] == i["item_id"] for i in explained["items"])
    assert posted == {"accepted": 1, "duplicates": 0}
    assert "P200" not in [i["item_id"] for i in after["items"]]  # just bought: owned items are not recommended
    assert len(anonymous["items"]) == 3 and anonymous["unknown_items"] == []
    assert why["item_id"] == "P201" and why["rank"] >= 1 and why["sentence"]


# ---------------------------------------------------------------------- the docs against --help
DOCS = [ROOT / "README.md", QUICKSTART]


def documented_commands() -> list[tuple[str, str, str]]:
    """(file, subcommand path, the rest of the line) for every `recscope ...` line of a code block
    and every `recscope ...` in inline code (`.venv/bin/recscope` too; `recscope COMMAND` is a
    placeholder, not a command line, and so is `recscope ...`)."""
    found = []
    for path in DOCS:
        text = path.read_text()
        lines = [
            line for block in re.findall(r"^```\w*\n(.*?)^```", text, flags=re.S | re.M) for line in block.splitlines()
        ]
        lines += re.findall(r"`([^`\n]*recscope [^`\n]*)`", text)
        for line in lines:
            line = re.sub(r"^\$ ", "", line.strip())
            words = line.split("#")[0].split()
            if not words or not re.fullmatch(r"(?:\S*/)?recscope", words[0]) or words[1:2] in (["COMMAND"], ["..."]):
                continue
            found.append((path.name, words[1:]))
    return [(name, *split_subcommand(words)) for name, words in found]


def split_subcommand(words: list[str]) -> tuple[str, str]:
    group = typer.main.get_command(app)
    path = []
    for word in words:
        if word in getattr(group, "commands", {}):  # a group (typer bundles its own click)
            path.append(word)
            group = group.commands[word]
        else:
            break
    return " ".join(path), " ".join(words[len(path) :])


def options_of(path: str) -> set[str]:
    command = typer.main.get_command(app)
    for word in path.split():
        command = command.commands[word]
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}


def test_the_docs_name_commands_and_options_the_cli_has():
    commands = documented_commands()
    assert len(commands) >= 25, "the docs' command lines were not found"
    named = {path for _, path, _ in commands}
    assert {"train", "evaluate", "recommend", "explain", "explain-eval", "report", "serve"} <= named
    assert {"versions", "demo", "data generate", "data prepare"} <= named
    wrong = []
    for name, path, rest in commands:
        if not path and not rest.startswith("--version"):
            wrong.append(f"{name}: `recscope {rest}` names no command")
            continue
        used = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-k)(?![\w-])", rest))
        for option in sorted(used - options_of(path)):
            wrong.append(f"{name}: `recscope {path}` has no option {option} (see `recscope {path} --help`)")
    assert not wrong, "\n".join(wrong)


def test_the_drift_check_catches_a_wrong_option():
    assert "--promote" in options_of("versions") and "-k" in options_of("recommend")
    assert "--no-figures" in options_of("report") and "--top" not in options_of("recommend")
    assert split_subcommand(["data", "prepare", "csv:x", "--out", "d"]) == ("data prepare", "csv:x --out d")


def test_the_readme_lists_every_command_with_every_option():
    """The README's "Every command" block: a line per command, each naming all its options."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^### Every command\n.*?^```\n(.*?)^```", text, flags=re.S | re.M).group(1)
    lines = {}
    for line in block.splitlines():
        words = line.split("#")[0].split()
        if words[:1] == ["recscope"]:
            path, rest = split_subcommand(words[1:])
            lines[path] = rest
    root = typer.main.get_command(app)
    leaves = [
        f"{name} {sub}" if hasattr(command, "commands") else name
        for name, command in root.commands.items()
        for sub in (getattr(command, "commands", None) or [None])
    ]
    assert sorted(lines) == sorted(["", *leaves]), "a command is missing from the README, or one it lists is gone"
    missing = []
    for path, rest in lines.items():
        command = root
        for word in path.split():
            command = command.commands[word]
        for param in command.params:
            opts = [*param.opts, *param.secondary_opts]
            if not opts[0].startswith("-") or "--help" in opts:
                continue  # an argument (RUN, SPEC), or --help itself
            if not any(re.search(rf"(?<![\w-]){o}(?![\w-])", rest) for o in opts):
                missing.append(f"recscope {path}: {opts[0]}")
    assert not missing, "options --help lists but the README does not: " + ", ".join(missing)
