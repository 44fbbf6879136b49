"""Run every python code block of the given .rst files, as their `.. check:` comments say.

A comment before each ``.. code-block:: python`` says what to do with it:

    .. check: run                 run the block as a program (cwd: a fresh dir per page)
       uses: NAME NAME            ... with these helper blocks prepended
       expect: TEXT               ... and check that stdout contains TEXT (in order)
       stdin: TEXT
    .. check: helper NAME         keep the block as helper NAME
    .. check: module FILE         write the block to FILE in the page's directory
    .. check: server NAME         start the block in the background (8787 -> a free port)
    .. check: client              run like `run`, with 8787 -> the port of the last server
    .. check: names               each line "a.b.c" must resolve (import + getattr)
    .. check: skip REASON         not run (say why)
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PY = sys.executable


def blocks(path: Path):
    lines = path.read_text().splitlines()
    i = 0
    pending = None
    while i < len(lines):
        line = lines[i]
        if line.startswith(".. check:"):
            spec = [line[len(".. check:") :].strip()]
            i += 1
            while i < len(lines) and (lines[i].startswith("   ") and lines[i].strip()):
                spec.append(lines[i].strip())
                i += 1
            pending = (spec, i)
            continue
        m = re.match(r"^(\s*)\.\. code-block:: (\w+)", line)
        if m:
            lang = m.group(2)
            indent = len(m.group(1))
            i += 1
            while i < len(lines) and lines[i].strip().startswith(":"):
                i += 1
            body = []
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
            ):
                body.append(lines[i])
                i += 1
            code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
            if lang == "python":
                if pending is None:
                    raise SystemExit(f"{path}:{i}: python block without a check comment")
                yield pending[0], code, pending[1]
            pending = None
            continue
        i += 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise SystemExit(f"server exited early: {proc.stdout.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def main() -> int:
    failures = 0
    count = 0
    for name in sys.argv[1:]:
        path = Path(name)
        work = Path(tempfile.mkdtemp(prefix=f"doc-{path.stem}-"))
        helpers: dict[str, str] = {}
        servers = []
        ports: dict[str, int] = {}
        last = None
        items = list(blocks(path))

        # modules first, then servers, then everything else, each in page order
        def order(item):
            kind = item[0][0].partition(" ")[0]
            return {"module": 0, "helper": 0, "server": 1}.get(kind, 2)

        items.sort(key=order)
        for spec, code, line in items:
            head, *rest = spec
            kind, _, arg = head.partition(" ")
            opts: dict[str, list[str]] = {}
            for r in rest:
                k, _, v = r.partition(":")
                opts.setdefault(k.strip(), []).append(v.strip())
            where = f"{path.name}:{line}"
            if kind == "helper":
                helpers[arg] = code
                continue
            if kind == "module":
                (work / arg).parent.mkdir(parents=True, exist_ok=True)
                (work / arg).write_text(code)
                continue
            if kind == "skip":
                print(f"SKIP {where}: {arg}")
                continue
            if kind == "names":
                for dotted in code.split():
                    parts = dotted.split(".")
                    src = (
                        "import importlib\n"
                        f"parts={parts!r}\n"
                        "for n in range(len(parts), 0, -1):\n"
                        "    try:\n        obj = importlib.import_module('.'.join(parts[:n])); break\n"
                        "    except ImportError: pass\n"
                        "for p in parts[n:]: obj = getattr(obj, p)\n"
                    )
                    r = subprocess.run([PY, "-c", src], capture_output=True, text=True, cwd=work)
                    count += 1
                    if r.returncode:
                        failures += 1
                        print(f"FAIL {where}: name {dotted}: {r.stderr.strip().splitlines()[-1]}")
                continue
            cwd = work / opts.get("cwd", ["."])[0]
            cwd.mkdir(parents=True, exist_ok=True)
            uses = " ".join(opts.get("uses", [])).split()
            program = "".join(helpers[u] + "\n\n" for u in uses) + code
            if kind == "server":
                port = free_port()
                ports[arg] = port
                last = arg
                program = program.replace("8787", str(port))
                f = cwd / f"server_{line}.py"
                f.write_text(program)
                proc = subprocess.Popen(
                    [PY, str(f)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
                servers.append(proc)
                _ALL_SERVERS.append(proc)
                wait_port(port, proc)
                print(f"SERVER {where} on {port}")
                continue
            if kind == "client":
                targets = " ".join(opts.get("of", [])).split() or [last]
                runs = [(t, program.replace("8787", str(ports[t]))) for t in targets]
            elif kind == "run":
                runs = [("", program)]
            else:
                raise SystemExit(f"{where}: unknown check {kind!r}")
            for target, program in runs:
                f = cwd / f"snippet_{line}.py"
                f.write_text(program)
                count += 1
                if target:
                    where = f"{path.name}:{line} against {target}"
                try:
                    r = subprocess.run(
                        [PY, str(f)],
                        cwd=cwd,
                        capture_output=True,
                        text=True,
                        timeout=60,
                        input="\n".join(opts.get("stdin", [])),
                    )
                except subprocess.TimeoutExpired:
                    failures += 1
                    print(f"FAIL {where}: timeout")
                    continue
                ok = r.returncode == 0
                pos = 0
                for want in opts.get("expect", []):
                    at = r.stdout.find(want, pos)
                    if at < 0:
                        ok = False
                        print(f"  missing output {want!r}")
                    else:
                        pos = at + len(want)
                if ok:
                    print(f"ok   {where} ({kind})")
                else:
                    failures += 1
                    print(f"FAIL {where} ({kind}) rc={r.returncode}")
                    print(f"--- stdout\n{r.stdout}\n--- stderr\n{r.stderr[-3000:]}")
                if os.environ.get("SHOW"):
                    print(r.stdout, r.stderr)
        for proc in servers:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work)
    print(f"{count} checks, {failures} failures")
    return 1 if failures else 0


_ALL_SERVERS = []

if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for proc in _ALL_SERVERS:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
