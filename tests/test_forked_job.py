"""forked_job, which most kill/resume and two-rank tests run their jobs through: a child's exit status,
output, environment, argv and working directory are a subprocess's, and a failed rank stops the others."""

import subprocess

import pytest

import forked_job


def test_a_child_gets_its_own_environment_argv_and_working_directory(tmp_path):
    result = forked_job.run("forked_job_probe", "ok", "x", env={"PROBE": "seen"}, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"argv=['ok', 'x'] cwd={tmp_path} probe=seen rank=None"
    assert result.stderr == "said before the end\n"


def test_a_child_starts_with_every_preloaded_module_and_the_servers_heap_frozen():
    result = forked_job.run("forked_job_probe", "preloaded")
    assert result.returncode == 0 and "missing=[] frozen=True" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("argv, code", [(["raise"], 1), (["exit", "3"], 3), (["kill"], -9)])
def test_the_exit_status_is_a_subprocess_return_code(argv, code):
    result = forked_job.run("forked_job_probe", *argv)
    assert result.returncode == code
    assert "said before the end" in result.stderr, "stderr is written line by line, as to a pipe"
    if argv == ["raise"]:
        assert "RuntimeError: the probe failed" in result.stderr


def test_a_child_past_its_timeout_is_killed():
    with pytest.raises(subprocess.TimeoutExpired):
        forked_job.run("forked_job_probe", "sleep", "60", timeout=1)


def test_ranks_get_torchruns_environment_and_a_failed_rank_stops_the_others():
    both = forked_job.run_ranks("forked_job_probe", "ok")
    assert both.returncode == 0 and "rank=0" in both.stdout and "rank=1" in both.stdout
    env = forked_job.rank_environment(1, 2, 29500)
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["MASTER_PORT"]) == ("1", "1", "2", "29500")
    failed = forked_job.run_ranks("forked_job_probe", "rank1_fails", "60")
    assert failed.returncode == 1 and failed.rank_returncodes == [-9, 3], "rank 0 was killed, not waited for"
