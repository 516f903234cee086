"""The lowest versions pyproject.toml allows, as a pip constraints file (``name==floor``).

`.ci/run` installs the package with these into a second venv and runs the test suite there,
so every declared floor is a version that was actually tested (issue 10: several were not).
Every runtime dependency, the extras a user can ask for (server, camera) and the build
backend must have a ``>=`` floor; anything else stops the run.

    python .ci/floors.py            # the constraints, one per line
    python .ci/floors.py --check    # compare with what the current interpreter has installed
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
USER_EXTRAS = ("server", "camera")
FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)\s*$")


def floors() -> dict[str, str]:
    project = tomllib.loads(PYPROJECT.read_text())
    requirements = list(project["project"]["dependencies"])
    extras = project["project"]["optional-dependencies"]
    for extra in USER_EXTRAS:
        requirements += extras[extra]
    requirements += project["build-system"]["requires"]
    found: dict[str, str] = {}
    for requirement in requirements:
        match = FLOOR.match(requirement)
        if match is None:
            sys.exit(f"{requirement!r} in pyproject.toml has no single >= floor to test")
        found[match.group(1).lower()] = match.group(2)
    return found


def main() -> None:
    wanted = floors()
    if sys.argv[1:] == ["--check"]:
        wrong = []
        for name, floor in wanted.items():
            installed = metadata.version(name)
            if installed.split(".") != floor.split(".") + ["0"] * (
                len(installed.split(".")) - len(floor.split("."))
            ):
                wrong.append(f"{name} {installed} (floor {floor})")
        if wrong:
            sys.exit("not the lowest allowed versions: " + ", ".join(wrong))
        print(f"{len(wanted)} dependencies at their floors")
        return
    for name, floor in sorted(wanted.items()):
        print(f"{name}=={floor}")


if __name__ == "__main__":
    main()
