"""docs/configuration.md is the settings model rendered: every key, with a meaning, and current.

The committed file is compared with what `imprint config-reference` renders now (the real CLI,
as a subprocess); a key added to server/config.py without regenerating it fails here, and so
does a key without a description.
"""

from __future__ import annotations

import difflib
import re
import subprocess
from pathlib import Path

import pytest

from server.config import ConfigError, load_settings
from server.config_reference import REGENERATE, every_key, render_reference, sections
from server.dhcp.pool import SUBNET_KEY_DOCS
from server.dhcp.profiles import OPTION_KEY_DOCS, PROFILE_KEY_DOCS
from tests.helpers.proc import clean_env
from tests.helpers.server import imprint_argv

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT / "docs" / "configuration.md"
LAB = ROOT / "configs" / "lab.toml"


def stale_message(committed: str, rendered: str) -> str:
    diff = difflib.unified_diff(
        committed.splitlines(),
        rendered.splitlines(),
        "docs/configuration.md (committed)",
        "rendered from server/config.py",
        lineterm="",
        n=1,
    )
    return f"docs/configuration.md is stale: run `{REGENERATE}`\n" + "\n".join(list(diff)[:60])


def test_the_committed_reference_is_what_the_model_renders() -> None:
    committed = REFERENCE.read_text(encoding="utf-8")
    rendered = render_reference()
    assert committed == rendered, stale_message(committed, rendered)


def test_imprint_config_reference_prints_it() -> None:
    done = subprocess.run(
        [*imprint_argv(), "config-reference"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == REFERENCE.read_text(encoding="utf-8"), stale_message(
        REFERENCE.read_text(encoding="utf-8"), done.stdout
    )


@pytest.mark.parametrize(("key", "field"), list(every_key()), ids=[k for k, _ in every_key()])
def test_every_key_has_a_meaning(key: str, field: object) -> None:
    description = getattr(field, "description", None)
    assert description and len(description.split()) >= 3, (
        f"{key} has no description: add Field(description=...) in server/config.py saying "
        "what the value does (and its unit)"
    )


def section_text(doc: str, heading: str) -> str:
    """The part of the reference under `heading` up to the next heading of any level."""
    start = doc.index(f"\n{heading}\n")
    nxt = re.search(r"\n#{2,3} ", doc[start + 1 :])
    return doc[start : start + 1 + nxt.start()] if nxt else doc[start:]


def test_every_key_is_in_its_section_of_the_reference() -> None:
    doc = REFERENCE.read_text(encoding="utf-8")
    missing: list[str] = []
    for name, model in sections():
        text = section_text(doc, f"## [{name}]")
        for key in model.model_fields:
            if f"| `{key}` |" not in text or f"IMPRINT_{name.upper()}__{key.upper()}" not in text:
                missing.append(f"{name}.{key}")
    for heading, keys in [
        ("### [[dhcp.subnets]]", list(SUBNET_KEY_DOCS)),
        ("### [[dhcp.profiles]]", [*PROFILE_KEY_DOCS, *OPTION_KEY_DOCS]),
        ("### [[dhcp.links]]", ["interface", "mode", "server_ip", "subnets"]),
    ]:
        text = section_text(doc, heading)
        if heading == "### [[dhcp.profiles]]":  # the options' table follows without a heading
            text = doc[doc.index(f"\n{heading}\n") : doc.index("\n### [[dhcp.links]]\n")]
        missing += [f"{heading} {k}" for k in keys if f"| `{k}` |" not in text]
    assert not missing, f"not in docs/configuration.md: {missing}; run `{REGENERATE}`"


def test_an_unknown_key_points_at_the_reference(tmp_path: Path) -> None:
    p = tmp_path / "imprint.toml"
    p.write_text("[mdns]\nrate_per_sourc = 2\n")
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert "mdns.rate_per_sourc: unknown key" in str(e.value)
    assert "docs/configuration.md" in str(e.value)
    assert REFERENCE.exists()


def test_lab_toml_shows_every_section() -> None:
    """Each [section] is there, set or as a commented-out example, and so are the arrays of
    tables; what is set still loads."""
    text = LAB.read_text(encoding="utf-8")
    headers = set(re.findall(r"^#? ?(\[\[?[a-z.]+\]\]?)", text, re.MULTILINE))
    want = {f"[{name}]" for name, _ in sections()}
    want |= {"[[dhcp.subnets]]", "[[dhcp.profiles]]", "[[dhcp.links]]"}
    assert want <= headers, f"configs/lab.toml lacks {sorted(want - headers)}"
    load_settings(LAB)
