"""kmsctl get-secret, exec and render against a fake agent on a real socket.

The fake agent serves GetSecretValue from a map. Unit tests replace
``execvpe``, the clock and the sleep. The exec tests at the end run
kmsctl as a real process that execs a small Python child.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from client import cli, startup
from client.errors import (
    InvalidParameterError,
    ResourceNotFoundError,
    ServerUnreachableError,
    ServiceUnavailableError,
)
from client.startup import SecretReference
from client.wire import Response, error_response
from tests.client.conftest import FakeAgent

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Pa55word"
DB_JSON = json.dumps({"user": "app", "password": PASSWORD, "port": 5432})
SECRETS = {
    "prod/db-password": ("text", PASSWORD),
    "prod/db": ("text", DB_JSON),
    "tls/key": ("binary", b"\x00\x01binary\xff"),
}
CHILD = """\
import hashlib, json, os, sys
with open("/proc/self/cmdline", "rb") as f:
    cmdline = f.read().split(b"\\0")
value = os.environ.get("DB_PASSWORD", "")
print(json.dumps({
    "pid": os.getpid(),
    "sha256": hashlib.sha256(value.encode()).hexdigest(),
    "cmdline": [part.decode() for part in cmdline if part],
    "argv": sys.argv,
}))
"""


class SecretHandler:
    """Serve GetSecretValue from ``SECRETS``; ``failures`` are returned first."""

    def __init__(self):
        self.failures = []

    def __call__(self, request, reply) -> bool:
        name = request.params.get("SecretName")
        if request.op != "GetSecretValue" or name not in SECRETS:
            reply(error_response(ResourceNotFoundError(), request.id))
        elif self.failures:
            reply(error_response(self.failures.pop(0), request.id))
        else:
            data_type, data = SECRETS[name]
            reply(Response(request.id, result={
                "SecretName": name, "SecretData": data, "SecretDataType": data_type,
                "VersionId": "v1", "VersionStages": {"VersionStage": ["ACSCurrent"]},
            }))
        return True


@pytest.fixture
def agent(tmp_path):
    fake = FakeAgent(str(tmp_path / "agent.sock"))
    fake.handler = SecretHandler()
    yield fake
    fake.stop()


class FakeClock:
    """A clock that a recorded sleep moves forward."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ExecRecorder:
    """Stands in for os.execvpe and records its arguments."""

    def __init__(self):
        self.calls: list[tuple[str, list[str], dict[str, str]]] = []

    def __call__(self, file, args, env):
        self.calls.append((file, list(args), dict(env)))


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    status = cli.run(argv, stdout=stdout, stderr=stderr)
    return status, stdout.getvalue(), stderr.getvalue()


def run_startup(argv: list[str], *, clock: FakeClock | None = None,
                execvpe=None) -> tuple[int, str, str]:
    clock = clock or FakeClock()
    stdout, stderr = io.StringIO(), io.StringIO()
    status = startup.run(argv, client_factory=None, stdout=stdout, stderr=stderr,
                         execvpe=execvpe or ExecRecorder(), clock=clock,
                         sleep=clock.sleep)
    return status, stdout.getvalue(), stderr.getvalue()


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- command lines ----------------------------------------------------------------


def test_find_command_skips_global_options():
    """Global options before the command are skipped."""
    argv = ["--socket", "/s", "--wait=5", "--timeout", "3", "exec", "--env", "A=b"]
    assert startup.find_command(argv) == "exec"


def test_find_command_ignores_operations():
    """Operations and file commands are left to the rest of kmsctl."""
    assert startup.find_command(["Encrypt", "--KeyId", "exec"]) is None
    assert startup.find_command(["encrypt-file", "a", "b"]) is None
    assert startup.find_command(["--KeyId", "render"]) is None


def test_env_binding_with_field():
    """VAR=SECRET#FIELD names a secret and one field of its JSON value."""
    binding = startup.parse_env_binding("DB_USER=prod/db#user")
    assert binding.variable == "DB_USER"
    assert binding.secret == SecretReference("prod/db", "user")


@pytest.mark.parametrize("text", ["NOEQUALS", "1VAR=x", "A-B=x", "VAR=", "VAR=x#",
                                  "=x"])
def test_env_binding_invalid_rejected(text):
    """Malformed --env values are rejected with the usage in the message."""
    with pytest.raises(InvalidParameterError, match="VAR=SECRET"):
        startup.parse_env_binding(text)


def test_exec_program_after_dashes():
    """Everything after -- is the program and its arguments."""
    invocation = startup.parse_startup_command(
        ["exec", "--env", "A=x", "--", "app", "--env", "B=y"])
    assert invocation.program == ["app", "--env", "B=y"]
    assert len(invocation.env) == 1


def test_exec_program_without_dashes():
    """The first word that is not an option starts the program."""
    invocation = startup.parse_startup_command(["exec", "--env", "A=x", "app", "-v"])
    assert invocation.program == ["app", "-v"]


@pytest.mark.parametrize("argv, message", [
    (["exec", "--env", "A=x"], "PROGRAM"),
    (["exec", "--", "app"], "at least one --env"),
    (["exec", "--env", "A=x", "--env", "A=y", "--", "app"], "sets A twice"),
    (["get-secret"], "one secret NAME"),
    (["get-secret", "a", "--stage", "S", "--version-id", "v"], "not both"),
    (["get-secret", "a", "--env", "A=x"], "does not take --env"),
    (["render", "in"], "TEMPLATE and OUTPUT"),
    (["render", "in", "out", "--wait", "-1"], "non-negative number"),
    (["get-secret", "a", "--timeout", "0"], "positive number"),
])
def test_bad_command_lines_rejected(argv, message):
    """Invalid startup command lines raise InvalidParameterError."""
    with pytest.raises(InvalidParameterError, match=message):
        startup.parse_startup_command(argv)


def test_startup_help_printed():
    """--help prints the startup commands' help."""
    status, out, _ = run_cli(["exec", "--help"])
    assert status == 0
    assert "{{ secret \"NAME\" }}" in out


# --- templates ----------------------------------------------------------------------


def test_template_tags_parsed():
    """Secret tags become references and the rest stays text."""
    parts = startup.parse_template('a={{ secret "prod/db" }}\nb={{secret "x" "pw"}}')
    assert parts == ["a=", SecretReference("prod/db"), "\nb=",
                     SecretReference("x", "pw")]


def test_template_literal_braces():
    """{{ "{{" }} writes {{ and a lone }} is copied."""
    parts = startup.parse_template('{{ "{{" }} x }}')
    assert "".join(parts) == "{{ x }}"


def test_template_quote_escapes():
    """Inside quotes, \\" is a quote and \\\\ a backslash."""
    parts = startup.parse_template(r'{{ secret "a\"b\\c" }}')
    assert parts == [SecretReference('a"b\\c')]


def test_template_braces_inside_quotes():
    """A closing }} inside a quoted string does not end the tag."""
    assert startup.parse_template('{{ "}}" }}') == ["}}"]


@pytest.mark.parametrize("template, message", [
    ('ok\n{{ secret "a"', "line 2: a tag opened with {{ is never closed"),
    ("{{ secret }}", "line 1: invalid tag"),
    ('{{ secret "a" "b" "c" }}', "invalid tag"),
    ('{{ __import__("os").system("id") }}', "invalid tag"),
    ("{{ .Env.HOME }}", "invalid tag"),
    ('{{ "\\n" }}', "may follow a backslash"),
    ('{{ secret "" }}', "is empty"),
    ('{{ "a\nb" }}', "invalid tag"),
])
def test_template_errors_name_line(template, message):
    """Malformed tags raise an error naming the template and line."""
    with pytest.raises(InvalidParameterError, match=message) as caught:
        startup.parse_template(template, "app.conf.tmpl")
    assert "app.conf.tmpl" in str(caught.value)


# --- get-secret ---------------------------------------------------------------------


def test_get_secret_prints_text(agent):
    """A text value is printed exactly, with no newline added."""
    status, out, err = run_cli(["--socket", agent.path, "get-secret",
                                "prod/db-password"])
    assert status == 0
    assert out == PASSWORD
    assert err == ""


def test_get_secret_binary_as_base64(agent):
    """A binary value is printed as Base64 and a newline."""
    status, out, _ = run_cli(["--socket", agent.path, "get-secret", "tls/key"])
    assert status == 0
    assert out == "AAFiaW5hcnn/\n"


def test_get_secret_sends_stage(agent):
    """--stage is sent as VersionStage."""
    run_cli(["--socket", agent.path, "get-secret", "prod/db", "--stage",
             "ACSPrevious"])
    assert agent.requests[0].params == {"SecretName": "prod/db",
                                        "VersionStage": "ACSPrevious"}


def test_get_secret_sends_version_id(agent):
    """--version-id is sent as VersionId."""
    run_cli(["--socket", agent.path, "get-secret", "prod/db", "--version-id", "v1"])
    assert agent.requests[0].params == {"SecretName": "prod/db", "VersionId": "v1"}


def test_get_secret_output_raw_0600(agent, tmp_path):
    """--output writes the raw bytes with mode 0600 and prints nothing."""
    output = tmp_path / "key.bin"
    status, out, _ = run_cli(["--socket", agent.path, "get-secret", "tls/key",
                              "--output", str(output)])
    assert status == 0
    assert out == ""
    assert output.read_bytes() == b"\x00\x01binary\xff"
    assert file_mode(output) == 0o600


def test_get_secret_missing_exits_1(agent):
    """A missing secret exits 1 with its error code on stderr."""
    status, out, err = run_cli(["--socket", agent.path, "get-secret", "absent"])
    assert status == 1
    assert out == ""
    assert json.loads(err)["Code"] == "Forbidden.ResourceNotFound"


def test_get_secret_unreachable_exits_2(tmp_path):
    """No agent on the socket exits 2 with SDK.ServerUnreachable."""
    status, _, err = run_cli(["--socket", str(tmp_path / "absent.sock"),
                              "--wait", "0", "get-secret", "prod/db"])
    assert status == 2
    assert json.loads(err)["Code"] == "SDK.ServerUnreachable"


def test_get_secret_retries_unavailable(agent):
    """A transient agent error is retried before the value is printed."""
    agent.handler.failures = [ServiceUnavailableError()]
    status, out, _ = run_startup(["--socket", agent.path, "get-secret",
                                  "prod/db-password"])
    assert status == 0
    assert out == PASSWORD
    assert len(agent.requests) == 2


# --- waiting for the socket -----------------------------------------------------------


def test_wait_until_agent_starts(tmp_path):
    """A command started before its agent succeeds once the agent listens."""
    path = str(tmp_path / "late.sock")
    started = []

    class LateClock(FakeClock):
        def sleep(self, seconds):
            super().sleep(seconds)
            if len(self.sleeps) == 3:
                fake = FakeAgent(path)
                fake.handler = SecretHandler()
                started.append(fake)
    clock = LateClock()
    try:
        status, out, _ = run_startup(["--socket", path, "get-secret",
                                      "prod/db-password"], clock=clock)
    finally:
        for fake in started:
            fake.stop()
    assert status == 0
    assert out == PASSWORD
    assert len(clock.sleeps) == 3


def test_wait_times_out_clearly(tmp_path):
    """Without an agent the wait ends at --wait with a clear message."""
    path = str(tmp_path / "absent.sock")
    clock = FakeClock()
    with pytest.raises(ServerUnreachableError) as caught:
        run_startup(["--socket", path, "--wait", "5", "get-secret", "x"],
                    clock=clock)
    message = str(caught.value)
    assert "did not accept a connection within 5 seconds" in message
    assert path in message
    assert clock.now == pytest.approx(5.0)


def test_wait_backoff_capped_exponential(tmp_path):
    """Waits grow from 50 ms and never exceed 2 s."""
    clock = FakeClock()
    with pytest.raises(ServerUnreachableError):
        startup.wait_for_socket(str(tmp_path / "absent.sock"), 30, clock=clock,
                                sleep=clock.sleep, uniform=lambda: 1.0)
    assert clock.sleeps[:3] == pytest.approx([0.05, 0.1, 0.2])
    assert max(clock.sleeps) == pytest.approx(2.0)


def test_short_wait_prints_nothing(tmp_path):
    """Retries within the first two seconds print no line on stderr."""
    clock = FakeClock()
    stderr = io.StringIO()
    with pytest.raises(ServerUnreachableError):
        startup.run(["--socket", str(tmp_path / "absent.sock"), "--wait", "1.9",
                     "get-secret", "x"], client_factory=None, stdout=io.StringIO(),
                    stderr=stderr, clock=clock, sleep=clock.sleep)
    assert len(clock.sleeps) > 3
    assert stderr.getvalue() == ""


def test_wait_messages_on_stderr(tmp_path):
    """A long wait prints one line per retry on stderr, none on stdout."""
    clock = FakeClock()
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.raises(ServerUnreachableError):
        startup.run(["--socket", str(tmp_path / "absent.sock"), "--wait", "6",
                     "get-secret", "x"], client_factory=None, stdout=stdout,
                    stderr=stderr, clock=clock, sleep=clock.sleep)
    lines = stderr.getvalue().splitlines()
    assert stdout.getvalue() == ""
    assert 0 < len(lines) < len(clock.sleeps)
    assert all("is not ready" in line for line in lines)


def test_wait_unfixable_error_immediate(tmp_path):
    """A connect error that waiting cannot fix fails without retry."""
    plain_file = tmp_path / "plain-file"
    plain_file.write_text("")
    clock = FakeClock()
    with pytest.raises(ServerUnreachableError, match="Not a directory"):
        startup.wait_for_socket(str(plain_file / "agent.sock"), 30, clock=clock,
                                sleep=clock.sleep)
    assert clock.sleeps == []


# --- exec ---------------------------------------------------------------------


def test_exec_sets_environment(agent):
    """The program runs with the secret in its environment only."""
    recorder = ExecRecorder()
    run_startup(["--socket", agent.path, "exec", "--env",
                 "DB_PASSWORD=prod/db-password", "--", "myapp", "--flag"],
                execvpe=recorder)
    file, args, env = recorder.calls[0]
    assert file == "myapp"
    assert args == ["myapp", "--flag"]
    assert env["DB_PASSWORD"] == PASSWORD
    assert PASSWORD not in " ".join(args)


def test_exec_keeps_parent_environment(agent, monkeypatch):
    """The program also inherits kmsctl's own environment."""
    monkeypatch.setenv("KEPT_VARIABLE", "kept")
    recorder = ExecRecorder()
    run_startup(["--socket", agent.path, "exec", "--env", "P=prod/db-password",
                 "--", "myapp"], execvpe=recorder)
    assert recorder.calls[0][2]["KEPT_VARIABLE"] == "kept"


def test_exec_json_field_selected(agent):
    """SECRET#FIELD puts one field of a JSON value in the variable."""
    recorder = ExecRecorder()
    run_startup(["--socket", agent.path, "exec", "--env", "DB_USER=prod/db#user",
                 "--env", "DB_PORT=prod/db#port", "--", "myapp"], execvpe=recorder)
    env = recorder.calls[0][2]
    assert env["DB_USER"] == "app"
    assert env["DB_PORT"] == "5432"


def test_exec_binary_as_base64(agent):
    """A binary secret is set as Base64 text."""
    recorder = ExecRecorder()
    run_startup(["--socket", agent.path, "exec", "--env", "KEY=tls/key", "--",
                 "myapp"], execvpe=recorder)
    assert recorder.calls[0][2]["KEY"] == "AAFiaW5hcnn/"


def test_exec_missing_secret_not_run(agent):
    """A missing secret stops exec before the program runs."""
    recorder = ExecRecorder()
    with pytest.raises(ResourceNotFoundError):
        run_startup(["--socket", agent.path, "exec", "--env",
                     "A=prod/db-password", "--env", "B=absent", "--", "myapp"],
                    execvpe=recorder)
    assert recorder.calls == []


def test_exec_missing_field_hides_value(agent):
    """A missing JSON field fails with a message that omits the value."""
    status, out, err = run_cli(["--socket", agent.path, "exec", "--env",
                                "X=prod/db#absent", "--", "true"])
    assert status == 1
    assert "absent" in err
    assert PASSWORD not in err
    assert PASSWORD not in out


def test_exec_program_not_found_127(agent):
    """A program that does not exist exits 127 without showing secrets."""
    status, _, err = run_cli(["--socket", agent.path, "exec", "--env",
                              "DB_PASSWORD=prod/db-password", "--",
                              "/nonexistent/kms-agent-test-program"])
    assert status == 127
    assert "cannot run /nonexistent/kms-agent-test-program" in err
    assert PASSWORD not in err


def kmsctl_process(argv: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from client.cli import main; main()", *argv]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                          timeout=60)


def test_exec_real_child_environment(agent, tmp_path):
    """A real exec hands the child the secret in its environment."""
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    done = kmsctl_process(["--socket", agent.path, "exec", "--env",
                           "DB_PASSWORD=prod/db-password", "--", sys.executable,
                           str(child), "arg1"])
    report = json.loads(done.stdout)
    assert done.returncode == 0
    assert report["sha256"] == hashlib.sha256(PASSWORD.encode()).hexdigest()
    assert report["argv"] == [str(child), "arg1"]


def test_exec_secret_not_on_cmdline(agent, tmp_path):
    """Neither the child's /proc cmdline nor stderr contains the secret."""
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    done = kmsctl_process(["--socket", agent.path, "exec", "--env",
                           "DB_PASSWORD=prod/db-password", "--", sys.executable,
                           str(child)])
    report = json.loads(done.stdout)
    assert report["cmdline"] == [sys.executable, str(child)]
    assert PASSWORD not in "\0".join(report["cmdline"])
    assert PASSWORD not in done.stderr


def test_exec_replaces_kmsctl_process(agent, tmp_path):
    """exec runs the program in kmsctl's own process, not a child of it."""
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    command = [sys.executable, "-c", "from client.cli import main; main()",
               "--socket", agent.path, "exec", "--env", "DB_PASSWORD=prod/db-password",
               "--", sys.executable, str(child)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=REPO, text=True)
    out, _ = process.communicate(timeout=60)
    assert json.loads(out)["pid"] == process.pid


def test_exec_failure_exit_code_real(agent):
    """A real kmsctl exec with a missing secret exits 1 and prints the code."""
    done = kmsctl_process(["--socket", agent.path, "exec", "--env", "A=absent",
                           "--", "true"])
    assert done.returncode == 1
    assert json.loads(done.stderr)["Code"] == "Forbidden.ResourceNotFound"


# --- render -------------------------------------------------------------------


def render(agent, tmp_path, template: str, output: Path | None = None):
    source = tmp_path / "app.conf.tmpl"
    source.write_text(template)
    output = output or tmp_path / "app.conf"
    result = run_cli(["--socket", agent.path, "render", str(source), str(output)])
    return (*result, output)


def test_render_fills_values(agent, tmp_path):
    """Tags are replaced by values and fields; other text is kept."""
    status, _, _, output = render(
        agent, tmp_path,
        'user={{ secret "prod/db" "user" }}\npass={{ secret "prod/db-password" }}\n'
        'key={{secret "tls/key"}} raw={{ "{{" }}x}}\n')
    assert status == 0
    assert output.read_text() == (f"user=app\npass={PASSWORD}\n"
                                  "key=AAFiaW5hcnn/ raw={{x}}\n")


def test_render_output_mode_0600(agent, tmp_path):
    """The rendered file is readable by its owner only."""
    _, _, _, output = render(agent, tmp_path, '{{ secret "prod/db-password" }}')
    assert file_mode(output) == 0o600


def test_render_replaces_by_rename(agent, tmp_path):
    """An existing OUTPUT is replaced by a new file, not rewritten in place."""
    output = tmp_path / "app.conf"
    output.write_text("old")
    output.chmod(0o644)
    old_inode = output.stat().st_ino
    status, _, _, _ = render(agent, tmp_path, "new", output)
    assert status == 0
    assert output.stat().st_ino != old_inode
    assert output.read_text() == "new"
    assert file_mode(output) == 0o600


def test_render_unknown_secret_untouched(agent, tmp_path):
    """An unknown secret fails and leaves OUTPUT and its directory as they were."""
    output = tmp_path / "app.conf"
    output.write_text("old")
    before = sorted(os.listdir(tmp_path))
    status, _, err, _ = render(agent, tmp_path, 'x={{ secret "absent" }}', output)
    assert status == 1
    assert json.loads(err)["Code"] == "Forbidden.ResourceNotFound"
    assert output.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == sorted(before + ["app.conf.tmpl"])


def test_render_syntax_error_no_output(agent, tmp_path):
    """A malformed template fails before OUTPUT is created."""
    status, _, err, output = render(agent, tmp_path, "a\n{{ oops }}")
    assert status == 1
    assert "line 2" in json.loads(err)["Message"]
    assert not output.exists()
    assert agent.requests == []


def test_render_missing_template_exits_1(agent, tmp_path):
    """A template that cannot be read exits 1 naming the path."""
    status, _, err = run_cli(["--socket", agent.path, "render",
                              str(tmp_path / "absent.tmpl"), str(tmp_path / "out")])
    assert status == 1
    assert "absent.tmpl" in json.loads(err)["Message"]


def test_write_failure_leaves_no_temp(tmp_path):
    """A failed rename removes the temporary file."""
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("")
    with pytest.raises(OSError):
        startup.write_private_file(str(target), b"data")
    assert sorted(os.listdir(tmp_path)) == ["target"]


def test_write_ignores_permissive_umask(tmp_path):
    """The file mode is 0600 even under a umask of 0."""
    old_umask = os.umask(0)
    try:
        startup.write_private_file(str(tmp_path / "out"), b"data")
    finally:
        os.umask(old_umask)
    assert file_mode(tmp_path / "out") == 0o600


def test_write_replaces_symlink_not_target(tmp_path):
    """A symbolic link at OUTPUT is replaced, and its target kept."""
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    link = tmp_path / "out"
    link.symlink_to(target)
    startup.write_private_file(str(link), b"data")
    assert target.read_text() == "keep"
    assert not link.is_symlink()


def test_render_bad_template_no_wait(tmp_path):
    """A malformed template fails before any wait for the agent."""
    source = tmp_path / "app.conf.tmpl"
    source.write_text("{{ oops }}")
    clock = FakeClock()
    with pytest.raises(InvalidParameterError, match="line 1"):
        run_startup(["--socket", str(tmp_path / "absent.sock"), "render",
                     str(source), str(tmp_path / "out")], clock=clock)
    assert clock.sleeps == []
