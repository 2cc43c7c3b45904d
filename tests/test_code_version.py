"""code_version: the hash of the library code a step imports changes with exactly the modules it reaches."""

from __future__ import annotations

import shutil
from pathlib import Path

from workflow_scripts import code_version as cv

from .conftest import REPO


def test_imports_are_followed_through_the_library():
    files = {str(p.relative_to(REPO / "workflow_scripts")) for p in
             cv.imported_files(REPO / "workflow_scripts/steps/hemmati22/detect.py")}
    assert {"studies/hemmati22/detect.py", "detection/prominence.py", "detection/__init__.py", "io.py",
            "steps/_common.py", "steps/hemmati22/detect.py"} <= files
    psf = {str(p.relative_to(REPO / "workflow_scripts")) for p in
           cv.imported_files(REPO / "workflow_scripts/steps/data/psf.py")}
    assert "data/psf.py" in psf and not any(f.startswith(("detection/", "studies/", "train/")) for f in psf)


def test_an_edit_changes_the_hash_of_the_steps_that_import_it_only(tmp_path: Path, monkeypatch):
    in_repo = (cv.code_version(REPO / "workflow_scripts/steps/hemmati22/detect.py"),
               cv.code_version(REPO / "workflow_scripts/steps/data/psf.py"))
    pkg = tmp_path / "workflow_scripts"
    shutil.copytree(REPO / "workflow_scripts", pkg, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cv, "ROOT", pkg)
    detect, psf = pkg / "steps/hemmati22/detect.py", pkg / "steps/data/psf.py"
    before = cv.code_version(detect), cv.code_version(psf)
    assert before == in_repo, "the hash must not depend on where the checkout is"
    module = pkg / "detection/prominence.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    after = cv.code_version(detect), cv.code_version(psf)
    assert after[0] != before[0] and after[1] == before[1]
