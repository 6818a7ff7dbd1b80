"""``formatters.FailureFormatter``: a failure with the atoms that ran before it, as TaskFlow code logs it."""

from __future__ import annotations

import importlib
from typing import Any

import pytest


def _m(package: str, path: str) -> Any:
    return importlib.import_module("%s.%s" % (package, path))


def _formatted_at_failure(package: str, **formatter_options: Any) -> tuple[Any, str]:
    engines = _m(package, "engines")
    formatters = _m(package, "formatters")
    linear_flow = _m(package, "patterns.linear_flow")
    states = _m(package, "states")
    task = _m(package, "task")

    class Charge(task.Task):
        def execute(self, card: dict[str, str]) -> dict[str, str]:
            return {"charge": "ch-1", "secret": "s3"}

    class Ship(task.Task):
        def execute(self, charge: dict[str, str]) -> None:
            raise ValueError("no address")

    flow = linear_flow.Flow("order").add(
        task.FunctorTask(lambda: "R-1", name="reserve", provides="reservation"),
        Charge("charge", provides="charge"),
        Ship("ship"),
    )
    engine = engines.load(flow, store={"card": {"number": "4111", "holder": "Ann"}})
    formatter = formatters.FailureFormatter(engine, **formatter_options)
    seen: list[tuple[Any, str]] = []

    def on_failure(state: Any, details: dict[str, Any]) -> None:
        name = details["task_name"]
        seen.append(formatter.format(details["result"], lambda node: node.item.name == name))

    engine.atom_notifier.register(states.FAILURE, on_failure)
    with pytest.raises(ValueError, match="no address"):
        engine.run()
    assert len(seen) == 1
    return seen[0]


def test_details_list_the_predecessors_with_their_arguments_and_results(package: str) -> None:
    exc_info, details = _formatted_at_failure(package)
    assert isinstance(exc_info[1], ValueError)
    lines = details.splitlines()
    assert lines[0].endswith(" predecessors (most recent first):")
    charge = next(line for line in lines if "Atom 'charge'" in line)
    assert "'state': 'SUCCESS'" in charge and "'intention': 'EXECUTE'" in charge
    assert "'requires': {'card': {'number': '4111', 'holder': 'Ann'}}" in charge
    assert "'provides': {'charge': 'ch-1', 'secret': 's3'}" in charge
    assert any("Atom 'reserve'" in line and "'provides': 'R-1'" in line for line in lines)
    # reserve ran before charge: it hangs below it.
    assert lines.index(charge) < next(i for i, line in enumerate(lines) if "Atom 'reserve'" in line)


def test_masked_keys_and_hidden_atoms(package: str) -> None:
    _, details = _formatted_at_failure(
        package, hide_inputs_outputs_of=["reserve"], mask_inputs_keys=["number"], mask_outputs_keys=["secret"]
    )
    charge = next(line for line in details.splitlines() if "Atom 'charge'" in line)
    assert "'requires': {'card': {'number': '***', 'holder': 'Ann'}}" in charge
    assert "'provides': {'charge': 'ch-1', 'secret': '***'}" in charge
    reserve = next(line for line in details.splitlines() if "Atom 'reserve'" in line)
    assert "requires" not in reserve and "provides" not in reserve and "'state': 'SUCCESS'" in reserve


def test_a_failure_read_back_from_storage_brings_its_traceback_text(package: str) -> None:
    failure = _m(package, "types.failure")
    engines = _m(package, "engines")
    formatters = _m(package, "formatters")
    linear_flow = _m(package, "patterns.linear_flow")
    task = _m(package, "task")
    engine = engines.load(linear_flow.Flow("f").add(task.FunctorTask(lambda: 1, name="one")))
    engine.compile()
    engine.prepare()
    try:
        raise ValueError("stored")
    except ValueError:
        stored = failure.Failure.from_dict(failure.Failure().to_dict())
    info, details = formatters.FailureFormatter(engine).format(stored, lambda node: node.item.name == "one")
    assert info is None
    assert details.startswith("Failure: ValueError: stored\nTraceback (most recent call last):\n")
