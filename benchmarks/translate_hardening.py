"""Issue 9's hardening cases for `dlkit translate`: exit code, first stderr line, peak RSS, wall time.

Each case runs `dlkit translate` under `/usr/bin/time -v` (Linux, GNU time) with hostile or unusual input
made on the fly (nothing is written into the project): a 50 MB / 100 MB single line streamed on stdin,
non-UTF-8 bytes as an argument, references from `<(...)`, a line of two sentences. Prints a Markdown table.

Usage:
  OMP_NUM_THREADS=1 python benchmarks/translate_hardening.py --model multi30k-en-fr [--cases big50,big100,...]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

GEN = ("import sys\nw = sys.stdout.buffer\nchunk = {chunk!r}.encode() * 65536\nn, rest = divmod({mb} * 1_000_000, len(chunk))\n"
       "for _ in range(n): w.write(chunk)\nw.write(chunk[:rest] + b'\\n')\n")  # exactly MB * 10^6 bytes, then a newline


def cases(model: str, threads: bool = True) -> dict[str, tuple[str, str]]:
    dl = f"{sys.executable} -m dlkit translate -m {model}" + (" --threads 1" if threads else "")
    gen = lambda mb, chunk: f"{sys.executable} -c {_q(GEN.format(mb=mb, chunk=chunk))}"  # noqa: E731
    return {
        "big50": ("50 MB single line on stdin (words, no sentence end)", f"{gen(50, 'a dog runs on the grass ')} | {{time}} {dl}"),
        "big100": ("100 MB single line on stdin (words, no sentence end)", f"{gen(100, 'a dog runs on the grass ')} | {{time}} {dl}"),
        "sent50": ("50 MB single line of short sentences on stdin, --beam 1", f"{gen(50, 'A dog runs. ')} | {{time}} {dl} --beam 1"),
        "argbytes": ("non-UTF-8 bytes as an argument", f"{{time}} {dl} $'A dog \\xff runs.'"),
        "reffifo": ("--ref <(...) (process substitution)", f"{{time}} {dl} --ref <(echo 'Un chien court.') 'A dog runs.'"),
        "two": ("two sentences on one line", f"{{time}} {dl} 'A dog runs. A cat sleeps.'"),
    }


def _q(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def run(cmd: str) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run(["bash", "-c", cmd.format(time="/usr/bin/time -v")], capture_output=True, text=True, errors="replace")
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    status = re.search(r"Exit status: (\d+)", p.stderr)
    own = [ln for ln in p.stderr.splitlines() if ln and not ln.startswith(("\t", "Command exited"))]
    return {"rc": int(status.group(1)) if status else p.returncode, "rss_mb": int(rss.group(1)) / 1024 if rss else None,
            "message": own[0] if own else "", "stdout": p.stdout.strip()[:80], "seconds": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="multi30k-en-fr")
    ap.add_argument("--cases", default="big50,big100,sent50,argbytes,reffifo,two")
    ap.add_argument("--python-path", default=None, help="run another dlkit tree (e.g. an older checkout) for a before/after row")
    args = ap.parse_args()
    if args.python_path:
        import os

        os.environ["PYTHONPATH"] = args.python_path
    table = cases(args.model, threads=not args.python_path)  # an older tree may lack --threads: OMP_NUM_THREADS
    print("| case | exit code | message (stderr) | output (start) | peak RSS | wall time |")
    print("|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        what, cmd = table[name]
        r = run(cmd)
        print(f"| {what} | {r['rc']} | {r['message'][:110]} | {r['stdout'][:50]} | {r['rss_mb']:.0f} MB | {r['seconds']:.1f} s |",
              flush=True)


if __name__ == "__main__":
    main()
