"""Check that CI really tests the versions setup.cfg claims.

``python .ci/check_pins.py FILE``: every ``name==version`` pin in the constraints FILE is the
version installed in this environment (a pin whose package is not installed is an error: the
leg would not test it, unless setup.cfg's environment marker leaves that package out here).

``python .ci/check_pins.py --bounds``: every lower bound in setup.cfg (``install_requires`` and
each extra) is pinned at exactly that version in the constraints file of the leg that covers
it (see COVERED_BY), so raising a bound without raising the pin, or the reverse, fails CI.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

CI = Path(__file__).resolve().parent
ROOT = CI.parent
# Which constraints file pins the lower bounds of each section of setup.cfg. The prometheus
# extra needs a newer OpenTelemetry SDK than the others, so it is tested on its own leg; the docs
# extra (MkDocs) is pinned with the other dev tools.
COVERED_BY = {
    "install_requires": "constraints-lowest.txt",
    "otel": "constraints-lowest.txt",
    "otlp": "constraints-lowest.txt",
    "plot": "constraints-lowest.txt",
    "examples": "constraints-lowest.txt",
    "flask": "constraints-lowest.txt",
    "fastapi": "constraints-lowest.txt",
    "flask-caching": "constraints-lowest.txt",
    "django": "constraints-lowest.txt",
    "bench": "constraints-lowest.txt",
    "test": "constraints-lowest.txt",
    "prometheus": "constraints-py312.txt",
    "docs": "constraints-py312.txt",
    "dev": "constraints-py312.txt",
}


def read_pins(path: Path) -> dict[str, Version]:
    """The ``name==version`` lines of a constraints file."""
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            if not version:
                raise SystemExit(f"{path.name}: not a name==version pin: {line!r}")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def excluded_here() -> set[str]:
    """Packages whose every requirement in setup.cfg has a marker false in this environment."""
    wanted: dict[str, bool] = {}
    for section, text in setup_cfg_sections().items():
        for req in requirements(section, text):
            applies = req.marker is None or req.marker.evaluate({"extra": ""})
            name = canonicalize_name(req.name)
            wanted[name] = wanted.get(name, False) or applies
    return {name for name, applies in wanted.items() if not applies}


def check_installed(path: Path) -> list[str]:
    problems = []
    skipped = excluded_here()
    for name, version in read_pins(path).items():
        if name in skipped:
            print(f"check_pins: {name}=={version} not checked: setup.cfg's marker excludes it here")
            continue
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name}=={version} is pinned in {path.name} but not installed")
            continue
        if installed != version:
            problems.append(f"{name}: {installed} installed, {path.name} pins {version}")
    return problems


def requirements(section: str, text: str) -> list[Requirement]:
    # "%(test)s" lines pull in other extras, which are checked under their own name.
    lines = [line.strip() for line in text.splitlines()]
    return [Requirement(line) for line in lines if line and not line.startswith("%(")]


def setup_cfg_sections() -> dict[str, str]:
    """``install_requires`` and every extra of setup.cfg, as raw text."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg")
    sections = {"install_requires": parser.get("options", "install_requires")}
    sections.update(parser.items("options.extras_require"))
    return sections


def check_bounds() -> list[str]:
    problems = []
    for section, text in setup_cfg_sections().items():
        if section not in COVERED_BY:
            problems.append(f"setup.cfg [{section}] is tested by no leg: add it to COVERED_BY")
            continue
        pins = read_pins(CI / COVERED_BY[section])
        for req in requirements(section, text):
            lows = [s.version for s in req.specifier if s.operator == ">="]
            if len(lows) != 1 or re.search(r"[*]", lows[0]):
                problems.append(f"[{section}] {req}: give it one '>=' lower bound")
                continue
            pinned = pins.get(canonicalize_name(req.name))
            if pinned != Version(lows[0]):
                problems.append(
                    f"[{section}] {req}: {COVERED_BY[section]} pins {pinned}, not {lows[0]}"
                )
    return problems


def main(argv: list[str]) -> int:
    if argv == ["--bounds"]:
        problems = check_bounds()
    elif len(argv) == 1:
        problems = check_installed(Path(argv[0]))
    else:
        print(__doc__)
        return 2
    for problem in problems:
        print(f"check_pins: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_pins {' '.join(argv)}: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
