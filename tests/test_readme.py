"""README.md cannot rot: its Python example runs as written and prints what its comments say, the files its
install lines name exist, and its links lead to pages and headings that exist."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def printed_claims(block: str) -> list[str]:
    """The comments on a block's print lines: what the README says each prints, e.g. `(24, 64, 64) float32: ...`."""
    return [line.split("# ", 1)[1] for line in block.splitlines() if line.startswith("print(") and "# " in line]


def slug(heading: str) -> str:
    """A heading's anchor as Markdown's toc extension (and the forges) make it."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


@pytest.mark.smoke
def test_python_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, one_torch_thread):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no Python example"
    monkeypatch.chdir(tmp_path)  # whatever the example writes stays in the test's folder
    capsys.readouterr()
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out.splitlines()
    claims = [claim for block in blocks for claim in printed_claims(block)]
    assert claims, "the example prints nothing it promises: give its print lines a comment with their output"
    assert len(printed) == len(claims), printed
    for line, claim in zip(printed, claims):
        assert claim.startswith(line), f"README says {claim!r}, the example printed {line!r}"


def test_install_lines_name_files_that_exist():
    text = README.read_text(encoding="utf-8")
    constraints = re.findall(r"-c (\S+\.txt)", text)
    assert constraints, "README's install lines do not use the lock"
    for name in constraints:
        assert (ROOT / name).is_file(), f"README installs with -c {name}, which does not exist"


def test_links_lead_somewhere():
    for target in LINK.findall(README.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        page = ROOT / path
        assert page.exists(), f"README links to {target}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)
            assert anchor in {slug(h) for h in headings}, f"README links to {target}: no such heading"
