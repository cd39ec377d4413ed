"""The package as a gateway gets it: the wheel built from this checkout, installed in a fresh
venv (its declared dependencies only, none of the checkout's dev tools). Used by the installed-
package tests and by ``bench/scale.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


def installed_venv(base: Path) -> Path:
    """Build the wheel (``pip wheel --no-deps``) under ``base`` and install it in the new venv
    ``base/venv``, dependencies from the package index or pip's cache; returns the venv."""
    dist, venv = base / "dist", base / "venv"
    subprocess.run([*PIP, "wheel", "--no-deps", "-w", str(dist), str(ROOT)], check=True,
                   cwd=base, timeout=300)  # fmt: skip
    (wheel,) = dist.glob("dirac_sidecar-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), *PIP[1:], "install", str(wheel)], check=True,
                   cwd=base, timeout=600)  # fmt: skip
    return venv
