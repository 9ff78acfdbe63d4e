"""roles/exporters' status-metrics: the jobs' status files (roles/common's write-status format and roles/backup's
status.json) as metrics for the node exporter's textfile collector."""
import json
import subprocess
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "roles/exporters/files/status-metrics"


def run(tmp_path, jobs, state=None):
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    if state is not None:
        (tmp_path / "state.json").write_text(json.dumps(state))
    subprocess.run(["python3", str(SCRIPT), str(tmp_path / "jobs.json"), str(tmp_path / "out.prom"),
                    str(tmp_path / "state.json")], check=True, capture_output=True, text=True)
    samples = {}
    for line in (tmp_path / "out.prom").read_text().splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_both_formats_a_failure_a_missing_file_and_a_job_with_no_schedule(tmp_path):
    (tmp_path / "copy.json").write_text(json.dumps({"result": "failure", "last_success_at": "2026-11-30T04:17:00Z",
                                                    "message": "the backup host's disk is full"}))
    (tmp_path / "dump.json").write_text(json.dumps({"last_success": "2026-11-30T03:17:05Z", "backup": "x"}))
    (tmp_path / "deploy.json").write_text("not json")
    before = time.time()
    samples = run(tmp_path, [
        {"name": "offsite-backup", "path": str(tmp_path / "copy.json"), "max_age_seconds": 93600},
        {"name": "pg-backup", "path": str(tmp_path / "dump.json"), "max_age_seconds": 93600},
        {"name": "offsite-check", "path": str(tmp_path / "missing.json"), "max_age_seconds": 691200},
        {"name": "deploy", "path": str(tmp_path / "deploy.json"), "max_age_seconds": 0}])
    job = 'flask_deploy_job_{}{{job_name="{}"}}'.format
    assert samples[job("failed", "offsite-backup")] == 1 and samples[job("failed", "pg-backup")] == 0
    assert samples[job("last_success_timestamp_seconds", "offsite-backup")] == 1796012220   # 2026-11-30T04:17:00Z
    assert samples[job("last_success_timestamp_seconds", "pg-backup")] == 1796008625
    # a job that succeeded is due from its last success; one with none yet from when it was first watched
    assert samples[job("due_since_timestamp_seconds", "pg-backup")] == 1796008625
    assert before - 1 <= samples[job("due_since_timestamp_seconds", "offsite-check")] <= time.time() + 1
    assert samples[job("status_ok", "offsite-check")] == 0 and samples[job("status_ok", "deploy")] == 0
    assert samples[job("max_age_seconds", "offsite-check")] == 691200
    # no schedule: never late, so neither due_since nor max_age
    assert job("max_age_seconds", "deploy") not in samples and job("due_since_timestamp_seconds", "deploy") not in samples


def test_the_time_a_job_was_first_watched_is_kept_across_runs(tmp_path):
    jobs = [{"name": "offsite-check", "path": str(tmp_path / "missing.json"), "max_age_seconds": 691200}]
    first = run(tmp_path, jobs, state={"offsite-check": 1796000000.0, "a job no longer listed": 1.0})
    assert first['flask_deploy_job_due_since_timestamp_seconds{job_name="offsite-check"}'] == 1796000000
    assert json.loads((tmp_path / "state.json").read_text()) == {"offsite-check": 1796000000.0}


def test_a_label_value_is_escaped(tmp_path):
    samples = run(tmp_path, [{"name": 'odd"name\\', "path": str(tmp_path / "x.json"), "max_age_seconds": 60}])
    assert 'flask_deploy_job_failed{job_name="odd\\"name\\\\"}' in samples
