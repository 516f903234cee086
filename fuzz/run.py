"""Run every fuzz harness for a while and report executions, coverage and crashes.

    python fuzz/run.py [--seconds 20] [HARNESS ...]

Each harness starts from its seed corpus (``fuzz/corpus/<name>``, made by ``fuzz/seeds.py``)
copied into a temporary directory, so runs never change the repository. A crash (an uncaught
exception or a failed assertion in a harness) leaves its input in ``fuzz/crashes/`` and makes
the exit status 1. ``.ci/run`` runs this with a short time; docs/performance.md records a long
run.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
HARNESSES = {
    "stream": ["-dict=" + str(HERE / "stream.dict")],
    "pair_setup": [],
    "inputs": [],
}
_DONE = re.compile(rb"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)")


def run(name: str, seconds: int, crashes: Path) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        shutil.copytree(HERE / "corpus" / name, corpus)
        result = subprocess.run(
            [
                sys.executable,
                str(HERE / f"{name}.py"),
                *HARNESSES[name],
                f"-max_total_time={seconds}",
                f"-artifact_prefix={crashes}/{name}-",
                "-print_final_stats=1",
                str(corpus),
            ],
            capture_output=True,
            timeout=seconds * 3 + 60,
        )
    done = _DONE.search(result.stderr)
    if result.returncode != 0 or done is None:
        tail = result.stderr.decode(errors="replace").splitlines()[-30:]
        return False, f"{name}: CRASH (exit {result.returncode})\n" + "\n".join(tail)
    runs, cov, features, units = (int(x) for x in done.groups())
    return True, f"{name}: {runs} executions, cov {cov}, features {features}, corpus {units}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="per harness")
    parser.add_argument("names", nargs="*", metavar="HARNESS", help=f"of {', '.join(HARNESSES)}")
    args = parser.parse_args()
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    ok = True
    unknown = [name for name in args.names if name not in HARNESSES]
    if unknown:
        parser.error(f"no harness {', '.join(unknown)} (there are {', '.join(HARNESSES)})")
    for name in args.names or HARNESSES:
        passed, line = run(name, args.seconds, crashes)
        print(line, flush=True)
        ok = ok and passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
