"""Reverting: when a task fails, the tasks that ran are undone in reverse order.

Each task's ``revert()`` gets its own ``result`` (for the task that failed, the captured
``Failure``) and ``flow_failures`` (atom name -> Failure). Once everything is reverted the
engine re-raises the original exception, so the caller catches the real error type.
"""

from flowkit import engines, states, task
from flowkit.patterns import linear_flow


class CreateVolume(task.Task):
    default_provides = "volume"

    def execute(self):
        print("create-volume: created vol-7")
        return "vol-7"

    def revert(self, result, flow_failures):
        print(f"create-volume: deleting {result}")


class AttachVolume(task.Task):
    default_provides = "device"

    def execute(self, volume):
        print(f"attach-volume: attached {volume} as /dev/vdb")
        return "/dev/vdb"

    def revert(self, volume, result, flow_failures):
        print(f"attach-volume: detaching {result} ({volume})")


class FormatVolume(task.Task):
    def execute(self, device):
        print(f"format-volume: formatting {device}...")
        raise OSError(f"no space left on {device}")

    def revert(self, device, result, flow_failures):
        print(f"format-volume: nothing to undo, it failed with: {result.exception_str}")
        print(f"format-volume: failures so far: {sorted(flow_failures)}")


def main():
    flow = linear_flow.Flow("provision-disk").add(
        CreateVolume("create-volume"),
        AttachVolume("attach-volume"),
        FormatVolume("format-volume"),
    )
    engine = engines.load(flow)
    try:
        engine.run()
    except OSError as exc:
        print(f"caught the original error: {type(exc).__name__}: {exc}")

    print(f"flow state: {engine.storage.get_flow_state()}")
    for atom in ("create-volume", "attach-volume", "format-volume"):
        state = engine.storage.get_atom_state(atom)
        assert state == states.REVERTED, state
        print(f"  {atom:<14} {state}")


if __name__ == "__main__":
    main()
