"""`imprint devices import --mode`: an export edited in a spreadsheet, checked, then applied."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.proc import run_imprint

MAC1, MAC2 = "02:00:5e:00:01:01", "02:00:5e:00:01:02"


def test_update_mode_dry_run_lists_the_moves_then_applies_them(cfg: Path, tmp_path: Path) -> None:
    def imprint(*args: str) -> tuple[int, str, str]:
        r = run_imprint(cfg, *args, check=False, timeout=60)
        return r.returncode, r.stdout, r.stderr

    assert imprint("tenants", "create", "--id", "contoso", "--name", "Contoso")[0] == 0
    first = tmp_path / "first.csv"
    first.write_text(f"MAC ID,Location\n{MAC1},Room 1\n{MAC2},Room 2\n")
    assert imprint("devices", "import", "--tenant", "contoso", str(first))[0] == 0
    code, export, _ = imprint("devices", "export", "--tenant", "contoso")
    assert code == 0 and MAC2 in export
    edited = tmp_path / "edited.csv"
    edited.write_text(export.replace("Room 2", "Lobby"), newline="")

    code, out, err = imprint("devices", "import", "--tenant", "contoso", str(edited))
    assert code == 1 and "already registered" in err and "--mode" not in out
    code, out, err = imprint(
        "devices", "import", "--tenant", "contoso", "--mode", "update", "--dry-run", str(edited)
    )
    assert code == 0, err
    assert f"update {MAC2} at 'Lobby' (was 'Room 2')" in out
    assert "0 registered, 1 moved, 1 unchanged (dry run: nothing stored)" in out
    code, out, err = imprint("devices", "import", "--tenant", "contoso", "--mode", "update",
                             str(edited))  # fmt: skip
    assert code == 0 and "imported 1 device(s): 0 registered, 1 moved, 1 unchanged" in out, err
    code, out, _ = imprint("devices", "list", "--tenant", "contoso")
    assert "Lobby" in out and "Room 2" not in out
    code, out, _ = imprint("devices", "import", "--tenant", "contoso", "--mode", "update",
                           str(edited))  # fmt: skip
    assert code == 0 and "0 moved, 2 unchanged" in out
