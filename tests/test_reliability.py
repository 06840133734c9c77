"""Data safety of the local warehouse: nothing of the user's is lost, whatever stops a run.

Each case was once a way to lose data or hang. Faults that are hard to arrange for real (a full disk,
a kill at one exact instant) are injected: a patched function raising ``ENOSPC``, or a subprocess that
dies with ``os._exit`` at a chosen step, which is what SIGKILL does to a process.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from fmcg_beam import outdir, sinks, warehouse, worker

from conftest import manifest, run_cli, tree

REPO = Path(__file__).resolve().parents[1]
TINY = ("--scale", "0.01", "--end_date", "2023-01-31")
BANKS = ("--scale", "0.01", "--tables", "dim_banks")


def cli(*args: str, timeout: float = 120, env: dict | None = None, **popen) -> subprocess.CompletedProcess:
    """``python -m fmcg_beam`` as its own process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "fmcg_beam", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env, **popen)



def control_entries(out: Path) -> list[str]:
    return sorted(p.name for p in (out / outdir.CONTROL).iterdir())


def warehouse_checksum(out: Path) -> dict:
    return {t: v["checksum"] for t, v in manifest(out)["tables"].items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A finished tiny warehouse, copied by the tests that damage one."""
    out = tmp_path_factory.mktemp("safety") / "out"
    assert run_cli(*TINY, "--output_dir", str(out)) == 0
    return out


def copy_warehouse(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


# --- ownership: only what fmcg-beam wrote is ever replaced -----------------------------------------


def test_a_foreign_manifest_does_not_make_a_directory_ours(tmp_path):
    d = tmp_path / "d"
    (d / "src").mkdir(parents=True)
    (d / "thesis.docx").write_text("keep")
    (d / "src" / "app.js").write_text("code")
    (d / "manifest.json").write_text('{"name": "my-extension"}')
    before = tree(d)
    r = cli(*BANKS, "--output_dir", str(d))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "holds no fmcg-beam warehouse" in r.stderr
    assert tree(d) == before and sorted(p.name for p in d.iterdir()) == ["manifest.json", "src", "thesis.docx"]


def test_a_forged_or_edited_manifest_is_not_ours(tmp_path):
    sealed = outdir.seal({"package": "fmcg-beam", "tables": {}})
    path = tmp_path / "m.json"
    path.write_text(json.dumps(sealed))
    assert outdir.read_manifest(path) == sealed
    path.write_text(json.dumps(dict(sealed, tables={"x": {}})))  # content changed, digest kept
    assert outdir.read_manifest(path) is None
    path.write_text(json.dumps(dict(sealed, format_version=1)))
    assert outdir.read_manifest(path) is None


def test_a_rerun_keeps_the_users_files_and_replaces_only_its_own(tmp_path, built):
    out = copy_warehouse(built, tmp_path / "out")
    (out / "my_queries.sql").write_text("SELECT 1;")
    (out / "notes").mkdir()
    (out / "notes" / "a.txt").write_text("mine")
    inode = out.stat().st_ino
    assert run_cli(*TINY, "--seed", "3", "--output_dir", str(out)) == 0
    assert (out / "my_queries.sql").read_text() == "SELECT 1;" and (out / "notes" / "a.txt").read_text() == "mine"
    assert manifest(out)["options"]["seed"] == 3
    assert out.stat().st_ino == inode  # never renamed, so a mount point works as an output directory
    assert control_entries(out)[:3] == ["FORMAT", "current", "gen-" + control_entries(out)[2][4:]]
    assert len(list((out / outdir.CONTROL).glob("gen-*"))) == 1


def test_an_entry_of_ours_replaced_by_the_user_is_refused_not_deleted(tmp_path, built):
    out = copy_warehouse(built, tmp_path / "out")
    (out / "fmcg.duckdb").unlink()
    (out / "fmcg.duckdb").write_text("my own database")
    r = cli(*BANKS, "--output_dir", str(out))
    assert r.returncode == 2 and "was not written by fmcg-beam" in r.stderr and r.stderr.count("\n") == 1
    assert (out / "fmcg.duckdb").read_text() == "my own database"


def test_a_warehouse_of_release_0_1_is_refused_with_the_reason(tmp_path):
    old = tmp_path / "old"
    (old / "parquet").mkdir(parents=True)
    (old / "fmcg.duckdb").write_bytes(b"x")
    (old / "manifest.json").write_text(json.dumps(
        {"package": "fmcg-beam", "version": "0.1.0", "options": {}, "tables": {"dim_banks": {"checksum": "1"}}}))
    r = cli(*BANKS, "--output_dir", str(old))
    assert r.returncode == 2 and "fmcg-beam 0.1" in r.stderr
    assert (old / "fmcg.duckdb").read_bytes() == b"x"


def test_release_0_1s_half_done_swap_is_put_back(tmp_path):
    """0.1 renamed the old warehouse away before renaming the new one in; a kill between lost the folder."""
    target = tmp_path / "out"
    side = tmp_path / ".out.old-0123456789ab"
    (side / "parquet").mkdir(parents=True)
    (side / "manifest.json").write_text(json.dumps(
        {"package": "fmcg-beam", "version": "0.1.0", "options": {}, "tables": {}}))
    stale = tmp_path / ".out.staging-0123456789ab"
    (stale / "parquet").mkdir(parents=True)
    r = cli(*BANKS, "--output_dir", str(target))
    assert (target / "manifest.json").is_file() and not side.exists() and not stale.exists()
    assert "restored" in r.stderr and r.returncode == 2  # put back, then not replaced (it is 0.1's)


# --- the swap: atomic, and recovered after a kill ---------------------------------------------------


def _die_at(step: str, out: Path, seed: str) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess that dies like SIGKILL right before ``OutputDir.<step>`` runs."""
    code = textwrap.dedent(f"""
        import os, sys
        from fmcg_beam import cli, outdir
        def die(*a, **k):
            os._exit(137)
        setattr(outdir.OutputDir, {step!r}, die)
        sys.exit(cli.main({[*TINY, "--seed", seed, "--output_dir", str(out), "--direct_num_workers", "1"]!r}))
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize("step", ["commit", "_flip"])
def test_a_kill_during_the_swap_leaves_a_whole_warehouse_and_the_next_run_recovers(tmp_path, built, step):
    out = copy_warehouse(built, tmp_path / "out")
    before = tree(out)
    assert _die_at(step, out, "5").returncode == 137
    assert tree(out) == before  # old warehouse complete and readable through its links
    con = duckdb.connect(str(out / "fmcg.duckdb"), read_only=True)
    con.close()
    r = cli(*BANKS, "--output_dir", str(out))
    assert r.returncode == 0, r.stderr
    assert "stale folder" in r.stderr
    assert [p.name for p in (out / outdir.CONTROL).iterdir() if p.name.startswith("staging")] == []


def test_a_first_run_killed_between_its_finished_warehouse_and_the_flip_is_completed(tmp_path):
    out = tmp_path / "out"
    assert _die_at("_flip", out, "5").returncode == 137
    assert not (out / "manifest.json").exists()
    r = cli(*BANKS, "--output_dir", str(out), "--seed", "6")
    assert "recovered the warehouse of an interrupted run" in r.stderr and r.returncode == 0
    assert manifest(out)["options"]["seed"] == 6


def test_the_flip_is_one_rename_of_the_current_link(tmp_path, built, monkeypatch):
    """A failure at the flip (a rename raising) leaves the old warehouse in place, whole."""
    out = copy_warehouse(built, tmp_path / "out")
    before = tree(out)
    real = os.replace

    def failing(src, dst, *a, **k):
        if str(dst).endswith(f"{outdir.CONTROL}/{outdir.CURRENT}"):
            raise OSError(errno.EIO, "simulated I/O error at the swap")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(outdir.os, "replace", failing)
    assert run_cli(*TINY, "--seed", "4", "--output_dir", str(out)) == 1
    assert tree(out) == before
    assert not list((out / outdir.CONTROL).glob("staging-*"))


# --- faults: one line, exit 1, nothing lost ---------------------------------------------------------


def test_a_full_disk_while_writing_parquet_fails_in_one_line(tmp_path, built, monkeypatch, capsys):
    out = copy_warehouse(built, tmp_path / "out")
    before = tree(out)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(warehouse.pq, "write_table", full)
    assert run_cli(*TINY, "--seed", "4", "--output_dir", str(out)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left" in err and "unchanged" in err
    assert tree(out) == before and not list((out / outdir.CONTROL).glob("staging-*"))


@pytest.mark.parametrize("beside", [True, False], ids=["beside the pipeline", "after it"])
def test_a_full_disk_while_building_duckdb_is_not_retried(tmp_path, monkeypatch, capsys, beside):
    calls = tmp_path / "calls"  # one line per build begun, from whichever process begins it

    def full(self):
        with open(calls, "a") as f:
            f.write("dimensions\n")
        raise duckdb.IOException('Could not write file "x": No space left on device')

    monkeypatch.setattr(warehouse.DuckDBBuild, "dimensions", full)
    monkeypatch.setattr(sinks, "spare_core", lambda rows, cores: beside)
    out = tmp_path / "out"
    assert run_cli(*BANKS, "--output_dir", str(out)) == 1
    err = capsys.readouterr().err
    assert calls.read_text() == "dimensions\n" and "rebuilding" not in err and "no space left" in err
    assert err.count("\n") == 1 and "nothing was written" in err
    assert not out.exists()  # the run created it, and removed it again


def test_output_paths_with_quotes_and_brackets_work(tmp_path):
    out = tmp_path / "it's \"a\" [b]" / "wh"
    assert run_cli(*BANKS, "--output_dir", str(out)) == 0
    con = duckdb.connect(str(out / "fmcg.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM dim_banks").fetchone()[0] == manifest(out)["tables"]["dim_banks"]["rows"]


def test_a_target_name_of_the_longest_length_works(tmp_path):
    out = tmp_path / ("w" * os.pathconf(tmp_path, "PC_NAME_MAX"))
    assert run_cli(*BANKS, "--output_dir", str(out)) == 0
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # nothing beside it


# --- concurrency and signals ------------------------------------------------------------------------


def test_a_second_run_into_a_locked_directory_is_refused(tmp_path, built):
    out = copy_warehouse(built, tmp_path / "out")
    before = tree(out)
    with open(out / outdir.CONTROL / "lock", "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.truncate(0)
        f.write("4242\n")
        f.flush()
        r = cli(*BANKS, "--output_dir", str(out))
    assert r.returncode == 2
    assert r.stderr.strip() == f"fmcg-beam: error: another run (pid 4242) is writing {out}; wait for it to " \
                               "finish, or choose another --output_dir"
    assert tree(out) == before


def _start(out: Path, *extra: str) -> subprocess.Popen:
    workers = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]  # real worker processes
    return subprocess.Popen([sys.executable, "-m", "fmcg_beam", "--scale", "0.2", "--output_dir", str(out),
                             *workers, *extra], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_staging(out: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not list((out / outdir.CONTROL).glob("staging-*/parquet/*/*.parquet")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run did not start writing"
        time.sleep(0.1)


def _processes(match) -> list[int]:
    """The pids of the processes whose /proc folder ``match`` accepts (one that ends meanwhile is skipped)."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and match(p):
                found.append(int(p.name))
        except OSError:
            pass
    return found


def _workers_of(pid: int) -> list[int]:
    """The run's live worker processes: forked ones by their name (a dead one keeps it until it is reaped),
    started ones by their command and environment."""
    forked = worker.FORKED_NAME.format(run=pid)
    return _processes(lambda p: ((p / "comm").read_text().strip() == forked
                                 and (p / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")
                      or (b"fmcg_beam.worker" in (p / "cmdline").read_bytes()
                          and f"FMCG_RUN_PID={pid}\0".encode() in (p / "environ").read_bytes()))


@pytest.mark.parametrize("signum, code, group", [
    (signal.SIGINT, 130, True),    # Ctrl-C in a terminal reaches the whole process group
    (signal.SIGTERM, 143, False),
    (signal.SIGHUP, 129, False),
])
def test_a_signal_stops_the_run_in_one_line_and_removes_its_staging(tmp_path, built, signum, code, group):
    out = copy_warehouse(built, tmp_path / "out")
    before = tree(out)
    proc = _start(out)
    _wait_for_staging(out, proc)
    assert _workers_of(proc.pid)
    (os.killpg if group else os.kill)(proc.pid, signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code
    assert err.strip().splitlines() == [
        f"fmcg-beam: error: stopped by {signal.Signals(signum).name}; the previous warehouse in {out} is unchanged"]
    assert tree(out) == before and not list((out / outdir.CONTROL).glob("staging-*"))
    time.sleep(0.5)
    assert not _workers_of(proc.pid)


def test_a_killed_worker_fails_the_run_in_one_line_that_says_so(tmp_path, built):
    out = copy_warehouse(built, tmp_path / "out")
    before = tree(out)
    proc = _start(out)
    _wait_for_staging(out, proc)
    killed = _workers_of(proc.pid)[0]
    os.kill(killed, signal.SIGKILL)  # as the system's out-of-memory killer does
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    errors = [line for line in err.splitlines() if not line.startswith("fmcg-beam: progress: ")]
    assert errors[-1].startswith(f"fmcg-beam: error: a local worker process (pid {killed}) was killed by SIGKILL "), err
    assert f"the previous warehouse in {out} is unchanged; details in " in errors[-1]
    assert "Traceback" not in err and len(errors) <= 3, err  # Beam's own word on it: a line each
    assert tree(out) == before and not list((out / outdir.CONTROL).glob("staging-*"))


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _forks_of(pid: int, command: bytes) -> list[int]:
    """Processes running ``command`` (a run's command line) other than ``pid``: the run's forks, such as the one
    drawing its page, whichever parent they have now."""
    return _processes(lambda p: int(p.name) != pid and (p / "cmdline").read_bytes() == command)


def test_sigkill_leaves_no_worker_and_the_next_run_removes_its_staging(tmp_path, built):
    out = copy_warehouse(built, tmp_path / "out")
    proc = _start(out)
    _wait_for_staging(out, proc)
    workers = _workers_of(proc.pid)
    assert workers
    # Forked by a server the run forked (fmcg_beam.forkserver), not started as interpreters of their own.
    assert all(_parent(_parent(w)) == proc.pid for w in workers)
    assert all(b"fmcg_beam.worker" not in Path(f"/proc/{w}/cmdline").read_bytes() for w in workers)
    command = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    assert _forks_of(proc.pid, command), "no process drawing the page"
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while (_workers_of(proc.pid) or _forks_of(proc.pid, command)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _workers_of(proc.pid), "workers outlived a killed run"
    assert not _forks_of(proc.pid, command), "the process drawing the page outlived a killed run"
    assert list((out / outdir.CONTROL).glob("staging-*"))
    r = cli(*BANKS, "--output_dir", str(out))
    assert r.returncode == 0
    assert [line for line in r.stderr.splitlines() if "stale folder" in line]
    assert not list((out / outdir.CONTROL).glob("staging-*"))


def _loading_libraries(pid: int, timeout: float = 30.0) -> bool:
    """Wait until the process ``pid`` has begun loading the run's libraries (numpy's extension is mapped: the
    interpreter's own start-up is over, and Apache Beam's import has a second to go)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if "_multiarray_umath" in Path(f"/proc/{pid}/maps").read_text():
                return True
        except OSError:
            return False
        time.sleep(0.01)
    return False


def test_ctrl_c_while_the_libraries_load_is_one_line(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "fmcg_beam", *BANKS, "--output_dir", str(tmp_path / "o")],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    # Not a fixed delay: on a loaded machine the interpreter's start-up (before any of fmcg-beam's code runs, so
    # before anything can turn Ctrl-C into a one-line message) took longer than 0.3 s.
    assert _loading_libraries(proc.pid)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["fmcg-beam: error: stopped before anything was written"] or \
        err.strip().splitlines()[0].startswith("fmcg-beam: error: stopped")
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_a_stop_that_arrives_in_a_finalizer_comes_again_after_it(monkeypatch):
    """Python ignores an exception raised in a ``__del__`` ("Exception ignored in: ..."), so a Ctrl-C handled
    while one ran was lost and the run went on. The handler raises ``Stopped`` anywhere else, and from a
    finalizer has the signal delivered again."""
    from fmcg_beam import stopping

    monkeypatch.setattr(stopping, "_stop_workers", lambda: None)
    monkeypatch.setattr(stopping, "_divert_logs", lambda: None)
    with pytest.raises(stopping.Stopped):
        stopping._raise_stopped(signal.SIGUSR1, sys._getframe())

    class Finalized:
        def __del__(self):
            stopping._raise_stopped(signal.SIGUSR1, sys._getframe())

    got: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
    try:
        Finalized()  # dropped at once: its __del__ runs here
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert got == [signal.SIGUSR1]


def test_a_signal_that_comes_again_diverts_the_logs_once(monkeypatch, tmp_path):
    import logging

    from fmcg_beam import stopping

    monkeypatch.setenv(worker.LOG_ENV, str(tmp_path / "run.log"))
    root = logging.getLogger()
    kept = list(root.handlers)
    try:
        stopping._divert_logs()
        (first,) = root.handlers
        stopping._divert_logs()  # the same signal, delivered again after a finalizer
        assert root.handlers == [first]
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in kept:
            root.addHandler(handler)
