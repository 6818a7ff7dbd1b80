"""What every ``flowkit`` command shares: ``--version``, ``python -m flowkit``, the current folder on
``sys.path``, ``graph --arg``, a closed pipe, SIGTERM in a conductor's log, hints for a missing driver
and a misspelt store key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import flowkit
from flowkit.cli import main
from flowkit.exceptions import MissingDependencies
from flowkit.patterns import linear_flow
from flowkit.task import Task
from tests.support import ROOT


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "flowkit %s" % (flowkit.__version__,)


def test_python_dash_m_flowkit_is_the_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flowkit", "--version"], capture_output=True, text=True, env=_env(), cwd=tmp_path,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "flowkit %s" % (flowkit.__version__,)


_SHOP = """
from flowkit.patterns import linear_flow
from flowkit.task import Task


class Step(Task):
    def execute(self) -> None:
        pass


def make(steps: int = 1, prefix: str = "step"):
    return linear_flow.Flow("shop").add(*(Step(name="%s-%d" % (prefix, i)) for i in range(steps)))
"""


def _console_script(*args: str, cwd: Path, stdout: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    # What the installed ``flowkit`` script runs: main() with the script's folder, not the
    # current one, first on sys.path (so the current folder is found only if main() adds it).
    code = "import sys; sys.path[0] = %r; from flowkit.cli import main; sys.exit(main())" % (str(ROOT),)
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=stdout, stderr=subprocess.PIPE, text=True, env=_env(), cwd=cwd
    )


def test_factories_are_found_in_the_current_folder_and_take_arguments(tmp_path: Path) -> None:
    (tmp_path / "shop_flows.py").write_text(_SHOP, encoding="utf-8")
    child = _console_script("graph", "shop_flows:make", "--arg", "steps=3", "--arg", "prefix=pay", cwd=tmp_path)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert all('"pay-%d"' % i in out for i in range(3)) and '"pay-3"' not in out


def test_a_bad_arg_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "tests.test_cli_basics:make_line", "--arg", "no equals sign"]) == 2
    assert "--arg 'no equals sign' is not KEY=VALUE" in capsys.readouterr().err


def make_line(steps: int = 1) -> Any:
    """A linear flow of ``steps`` tasks that do nothing."""
    return linear_flow.Flow("line").add(*(Nothing(name="n%d" % i) for i in range(steps)))


class Nothing(Task):
    """Does nothing."""

    def execute(self) -> None:
        pass


def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    # The reader is gone before the command writes anything (``flowkit graph ... | head`` once head exited).
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as writer:
        child = _console_script("graph", "tests.test_cli_basics:make_line", "--arg", "steps=3", cwd=ROOT, stdout=writer)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 1
    assert err == ""


def test_sigterm_is_acknowledged_in_a_conductors_log(tmp_path: Path) -> None:
    url = "sqlite:///%s" % (tmp_path / "jobs.db",)
    child = _console_script("--backend", url, "conductor", "--name", "c1", cwd=tmp_path)
    assert child.stdout is not None
    first = child.stdout.readline()
    assert "conductor c1 working board" in first
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.splitlines()[:2] == [
        "received SIGTERM: draining: no new claims, running jobs finish (send it again to suspend them)",
        "conductor c1 stopped",
    ]


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("postgresql://postgres@127.0.0.1:5432/nowhere", "psycopg", "postgres"),
        ("mysql://root@127.0.0.1:3306/nowhere", "pymysql", "mysql"),
    ],
)
def test_a_missing_database_driver_names_its_extra(
    url: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # importing it now fails as if it were not installed
    assert main(["logbooks", "--backend", url]) == 2
    err = capsys.readouterr().err
    assert "pip install 'flowkit[%s]'" % (extra,) in err and module in err


def test_a_missing_redis_driver_names_its_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    url = "sqlite:///%s" % (tmp_path / "jobs.db",)
    assert (
        main(["--backend", url, "jobs", "post", "tests.test_cli_basics:make_line", "--board", "redis://127.0.0.1:1/0"])
        == 2
    )
    assert "pip install 'flowkit[redis]'" in capsys.readouterr().err


class Charge(Task):
    """Charge ``amount``."""

    def execute(self, amount: int) -> int:
        return amount


def test_a_misspelt_store_key_gets_a_did_you_mean_hint(run: Any) -> None:
    flow = linear_flow.Flow("pay").add(Charge(name="charge"))
    with pytest.raises(MissingDependencies) as raised:
        run(flow, store={"ammount": 5, "currency": "EUR"})
    message = str(raised.value)
    assert "'charge' requires 'amount'" in message
    assert "did you mean store key 'ammount' for 'amount'?" in message
    assert "currency" not in message


def test_no_hint_when_no_store_key_is_close(run: Any) -> None:
    flow = linear_flow.Flow("pay").add(Charge(name="charge"))
    with pytest.raises(MissingDependencies) as raised:
        run(flow, store={"currency": "EUR"})
    assert "did you mean" not in str(raised.value)


def test_resume_with_engine_distributed_on_a_dask_scheduler(
    tmp_path: Path, dask_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_cli import make_flow

    url = "sqlite:///%s" % (tmp_path / "cli.db",)
    uuid = make_flow(url, suspend_after="reserve")
    address = dask_client.scheduler.address
    assert main(["resume", uuid[:12], "--backend", url, "--engine", "distributed", "--address", address]) == 0
    out = capsys.readouterr().out
    assert "resuming flow 'order' (%s) from SUSPENDED" % (uuid,) in out
    assert out.splitlines()[-1] == "flow 'order' (%s): SUCCESS" % (uuid,)


def test_address_without_engine_distributed_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_cli import make_flow

    url = "sqlite:///%s" % (tmp_path / "cli.db",)
    uuid = make_flow(url, suspend_after="reserve")
    assert main(["resume", uuid, "--backend", url, "--address", "tcp://127.0.0.1:8786"]) == 2
    assert "--address is the Dask scheduler of --engine distributed" in capsys.readouterr().err
