"""CS file backend: minimal text edits, atomic writes, backups, untouched files on failure."""

from __future__ import annotations

import difflib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from diraccfg import CFG

from sidecar.base.errors import CSError
from sidecar.config.cs import CSSettings, Layout
from sidecar.core.model import Backend, DesiredState, Protocol
from sidecar.dirac_cs.cstext import read_cs_file
from sidecar.dirac_cs.file import diff_cs_file, sync_cs_file
from sidecar.dirac_cs.render import CSOptions, render_cs

DATA = Path(__file__).resolve().parent.parent / "data" / "cs"
GW = ("dirac-gw1.example.org", "dirac-gw2.example.org")
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NOBODY = 65534


def backend(system: str, service: str, port: int, protocol: Protocol = Protocol.DIPS) -> Backend:
    return Backend(system, service, protocol, port, ())


DESIRED = DesiredState(
    (
        backend("Framework", "SystemAdministrator", 9162),
        backend("Framework", "BundleDelivery", 9158),
        backend("WorkloadManagement", "JobManager", 9132),
        backend("WorkloadManagement", "JobMonitoring", 8443, Protocol.HTTPS),
        backend("DataManagement", "FileCatalog", 9197),
        backend("Accounting", "DataStore", 9133),
        backend("Configuration", "Server", 9135, Protocol.HTTPS),
    )
)
V9 = CSSettings(configuration_servers=True, master_server=True)
V8 = CSSettings(layout=Layout.V8, use_mainservers=True)

# A changed line must be a URL option (or its += continuation), or MainServers; an added line
# may also be the skeleton of a new section.
URL_LINE = re.compile(r"\s*[A-Za-z][A-Za-z0-9_]*\s*\+?=\s*(?:dips|https)://\S+(?:,\s*\S+)*\s*")
MAINSERVERS_LINE = re.compile(r"\s*MainServers\s*\+?=\s*[a-z0-9.-]+\s*")
SKELETON = re.compile(r"\s*(?:[{}]|URLs|Accounting|Configuration|DataManagement|Production)\s*")


def copy(name: str, folder: Path) -> Path:
    target = folder / name
    shutil.copyfile(DATA / name, target)
    return target


def options_for(path: Path, settings: CSSettings) -> CSOptions:
    return render_cs(DESIRED, GW, settings, read_cs_file(path).options)


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    removed = [line[2:] for line in diff if line.startswith("- ")]
    added = [line[2:] for line in diff if line.startswith("+ ")]
    return removed, added


def comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip().startswith("#")]


def assert_only_url_lines_changed(before: str, after: str) -> None:
    removed, added = changed_lines(before, after)
    assert removed or added
    for line in removed:
        assert URL_LINE.fullmatch(line) or MAINSERVERS_LINE.fullmatch(line), line
    for line in added:
        ok = URL_LINE.fullmatch(line) or MAINSERVERS_LINE.fullmatch(line)
        assert ok or SKELETON.fullmatch(line), line
    assert comments(before) == comments(after)


def backups(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f"{name}.*.bak"))


@pytest.mark.parametrize(("name", "settings"), [("dirac-v9.cfg", V9), ("dirac-v8.cfg", V8)])
def test_sync_changes_only_url_options(tmp_path: Path, name: str, settings: CSSettings) -> None:
    path = copy(name, tmp_path)
    original = path.read_text()
    desired = options_for(path, settings)
    result = sync_cs_file(path, desired, settings, NOW)

    after = path.read_text()
    assert_only_url_lines_changed(original, after)
    cfg = CFG().loadFromBuffer(after)
    for option, values in desired.lists:
        assert set(cfg.getOption(option, [])) == set(values)
    assert set(result.changed_paths) <= set(desired.as_dict())
    assert result.backup is not None and result.backup.read_text() == original
    assert backups(tmp_path, name) == [result.backup]


def test_v9_edit_in_place(tmp_path: Path) -> None:
    path = copy("dirac-v9.cfg", tmp_path)
    desired = options_for(path, V9)
    result = sync_cs_file(path, desired, V9, NOW)
    text = path.read_text()
    # the gateway URLs were already there (other order): left alone
    assert "/Systems/WorkloadManagement/URLs/JobManager" not in result.changed_paths
    # a comment between "=" and "+=" stays between them
    assert (
        "      SystemAdministrator = dips://dirac-gw1.example.org:9162/Framework/SystemAdministrator\n"
        "      # the second instance\n"
        "      SystemAdministrator += dips://dirac-gw2.example.org:9162/Framework/SystemAdministrator\n"
    ) in text
    # a one-line comma list stays one line
    assert (
        "      BundleDelivery = dips://dirac-gw1.example.org:9158/Framework/BundleDelivery, "
        in text
    )
    # an option the gateway does not serve is not touched (no pruning by default)
    assert "ComponentMonitoring = dips://dirac-01.example.org:9190/" in text


def test_second_sync_writes_nothing(tmp_path: Path) -> None:
    path = copy("dirac-v9.cfg", tmp_path)
    desired = options_for(path, V9)
    sync_cs_file(path, desired, V9, NOW)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    data, mtime = path.read_bytes(), path.stat().st_mtime_ns

    result = sync_cs_file(path, desired, V9, NOW + timedelta(seconds=1))
    assert result.changes == () and result.backup is None
    assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime
    assert len(backups(tmp_path, "dirac-v9.cfg")) == 1
    assert diff_cs_file(path, desired, V9) == ""


def test_diff_shows_what_sync_writes(tmp_path: Path) -> None:
    path = copy("dirac-v8.cfg", tmp_path)
    original = path.read_bytes()
    desired = options_for(path, V8)
    diff = diff_cs_file(path, desired, V8)
    assert path.read_bytes() == original
    assert diff.startswith(f"--- {path}\n+++ {path} (synced)\n")
    sync_cs_file(path, desired, V8, NOW)
    written = difflib.unified_diff(
        original.decode().splitlines(keepends=True),
        path.read_text().splitlines(keepends=True),
        fromfile=str(path),
        tofile=f"{path} (synced)",
    )
    assert diff == "".join(written)
    assert "+    MainServers += dirac-gw2.example.org\n" in diff


def test_prune_deletes_gateway_urls_only_when_asked(tmp_path: Path) -> None:
    path = copy("dirac-v9.cfg", tmp_path)
    only_sa = DesiredState((backend("Framework", "SystemAdministrator", 9162),))
    settings = CSSettings(prune=True)
    desired = render_cs(only_sa, GW, settings, {})
    sync_cs_file(path, desired, CSSettings(), NOW)
    assert "JobManager = dips://dirac-gw2" in path.read_text()
    before = path.read_text()
    result = sync_cs_file(path, desired, settings, NOW)
    assert set(result.changed_paths) == {
        "/Systems/WorkloadManagement/URLs/JobManager",
        "/Systems/WorkloadManagement/URLs/JobMonitoring",
    }
    removed, added = changed_lines(before, path.read_text())
    assert added == [] and all("WorkloadManagement/Job" in line for line in removed)
    assert "ComponentMonitoring = dips://dirac-01" in path.read_text()


@pytest.mark.parametrize(
    "text",
    [
        "DIRAC\n{\n  Setup = Production\n",  # unclosed section
        "DIRAC\n{\n}\n}\n",  # one brace too many
        "DIRAC\n{\n  Servers += dips://a:1/B/C\n}\n",  # += before =
        "DIRAC\n{\n}\nDIRAC\n{\n}\n",  # the same section twice
    ],
)
def test_unparsable_file_is_left_untouched(tmp_path: Path, text: str) -> None:
    path = tmp_path / "dirac.cfg"
    path.write_text(text)
    desired = render_cs(DESIRED, GW, CSSettings(), {})
    with pytest.raises(CSError, match=str(path)):
        sync_cs_file(path, desired, CSSettings(), NOW)
    with pytest.raises(CSError):
        diff_cs_file(path, desired, CSSettings())
    assert path.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dirac.cfg"]


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(CSError, match="cannot read"):
        read_cs_file(tmp_path / "absent.cfg")


def test_edit_that_does_not_verify_writes_nothing(tmp_path: Path) -> None:
    # "SystemAdministrator" is a section here, so the option cannot be written
    text = "Systems\n{\n  Framework\n  {\n    URLs\n    {\n      SystemAdministrator\n      {\n"
    text += "      }\n    }\n  }\n}\n"
    path = tmp_path / "dirac.cfg"
    path.write_text(text)
    desired = render_cs(DESIRED, GW, CSSettings(), {})
    with pytest.raises(CSError, match="edit check failed"):
        sync_cs_file(path, desired, CSSettings(), NOW)
    assert path.read_text() == text
    assert backups(tmp_path, "dirac.cfg") == []


def run_unprivileged(action: Callable[[], object]) -> str:
    """Run ``action`` (as ``nobody`` in a forked child when we are root); how it ended."""
    if os.geteuid() != 0:
        try:
            action()
        except CSError:
            return "CSError"
        return "ok"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            action()
            code = 0
        except CSError:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return {0: "ok", 1: "CSError"}.get(os.waitstatus_to_exitcode(status), "crashed")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory ``nobody`` can reach (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="cs-test-"))
    folder.chmod(0o755)
    yield folder
    for sub in [folder, *folder.rglob("*")]:
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(folder)


def test_read_only_directory_leaves_the_file_intact(shared_dir: Path) -> None:
    folder = shared_dir / "etc"
    folder.mkdir()
    path = copy("dirac-v9.cfg", folder)
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)  # the file is writable, its directory is not
    folder.chmod(0o555)
    original = path.read_bytes()
    desired = options_for(path, V9)
    assert run_unprivileged(lambda: sync_cs_file(path, desired, V9, NOW)) == "CSError"
    assert path.read_bytes() == original
    assert sorted(p.name for p in folder.iterdir()) == ["dirac-v9.cfg"]


def test_unprivileged_sync_works_where_it_may_write(shared_dir: Path) -> None:
    """The control for the two tests around it: the same run succeeds when writing is allowed."""
    folder = shared_dir / "etc"
    folder.mkdir()
    folder.chmod(0o777)
    path = copy("dirac-v9.cfg", folder)
    path.chmod(0o666)
    desired = options_for(path, V9)
    assert run_unprivileged(lambda: sync_cs_file(path, desired, V9, NOW)) == "ok"
    assert "dirac-gw2.example.org:9162" in path.read_text()


def test_read_only_file_is_not_replaced(shared_dir: Path) -> None:
    folder = shared_dir / "etc"
    folder.mkdir()
    folder.chmod(0o777)
    path = copy("dirac-v9.cfg", folder)
    path.chmod(0o444)
    original = path.read_bytes()
    desired = options_for(path, V9)
    assert run_unprivileged(lambda: sync_cs_file(path, desired, V9, NOW)) == "CSError"
    assert path.read_bytes() == original
    assert sorted(p.name for p in folder.iterdir()) == ["dirac-v9.cfg"]


def test_failed_backup_leaves_the_file_intact(tmp_path: Path) -> None:
    path = copy("dirac-v9.cfg", tmp_path)
    not_a_dir = tmp_path / "backups"
    not_a_dir.write_text("")
    settings = CSSettings(backup_dir=str(not_a_dir))
    original = path.read_bytes()
    with pytest.raises(CSError, match="cannot write"):
        sync_cs_file(path, options_for(path, settings), settings, NOW)
    assert path.read_bytes() == original


def test_backups_are_timestamped_and_pruned(tmp_path: Path) -> None:
    path = copy("dirac-v9.cfg", tmp_path)
    keep = CSSettings(backups_keep=2, backup_dir=str(tmp_path / "bak"))
    (tmp_path / "bak").mkdir()
    made = []
    for i, names in enumerate([GW[:1], GW, GW[1:], GW]):
        desired = render_cs(DESIRED, names, keep, {})
        result = sync_cs_file(path, desired, keep, NOW + timedelta(minutes=i))
        made.append(result.backup)
    assert made[0] is not None and made[0].name == "dirac-v9.cfg.20250301T120000.000000Z.bak"
    assert backups(tmp_path / "bak", "dirac-v9.cfg") == made[-2:]
    assert backups(tmp_path, "dirac-v9.cfg") == []


def test_file_mode_is_kept(tmp_path: Path) -> None:
    path = copy("dirac-v9.cfg", tmp_path)
    path.chmod(0o640)
    sync_cs_file(path, options_for(path, V9), V9, NOW)
    assert path.stat().st_mode & 0o777 == 0o640


def test_symlink_target_is_written(tmp_path: Path) -> None:
    real = copy("dirac-v9.cfg", tmp_path)
    link = tmp_path / "dirac.cfg"
    link.symlink_to(real.name)
    result = sync_cs_file(link, options_for(link, V9), V9, NOW)
    assert link.is_symlink() and result.path == real
    assert "dirac-gw2.example.org:9162" in real.read_text()


def test_crlf_and_one_line_sections(tmp_path: Path) -> None:
    text = "# crlf\r\nSystems\r\n{\r\n  Framework { URLs {} }\r\n}\r\nOther = 1"
    path = tmp_path / "dirac.cfg"
    path.write_bytes(text.encode())
    desired = render_cs(DESIRED, GW, CSSettings(), {})
    sync_cs_file(path, desired, CSSettings(), NOW)
    data = path.read_bytes().decode()
    assert "\n" not in data.replace("\r\n", "")
    cfg = CFG().loadFromBuffer(data)
    for option, values in desired.lists:
        assert tuple(cfg.getOption(option, [])) == values
    assert cfg.getOption("/Other") == "1"


def test_read_cs_file_values(tmp_path: Path) -> None:
    cs = read_cs_file(copy("dirac-v8.cfg", tmp_path))
    assert cs.options["/DIRAC/Setup"] == "LHCb-Production"
    assert cs.lists()["/DIRAC/Configuration/Servers"] == (
        "dips://lbcs1.cern.ch:9135/Configuration/Server",
        "dips://lbcs2.cern.ch:9135/Configuration/Server",
    )
    assert "/Resources/Sites/LCG/LCG.CERN.cern" in cs.sections
