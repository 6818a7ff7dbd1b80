"""Suspend and resume: stop a flow part way, then run the same engine again to finish it.

``engine.suspend()`` lets the atoms already running finish and starts no new ones; the flow
ends SUSPENDED and ``run()`` raises nothing. Calling ``run()`` again continues from where it
stopped, reusing the results already stored: finished tasks are not run twice.

Here an atom listener suspends the release flow once the build has been tested, as a
deployment pipeline would while it waits for a person to approve the release.
"""

from flowkit import engines, states, task
from flowkit.patterns import linear_flow


class Step(task.Task):
    def execute(self):
        print(f"  {self.name}: done")
        return self.name


def main():
    names = ["build", "test", "deploy-staging", "deploy-production"]
    flow = linear_flow.Flow("release").add(*(Step(name) for name in names))
    engine = engines.load(flow)

    def wait_for_approval(state, details):
        if details["atom_name"] == "test" and state == states.SUCCESS:
            print("  (test passed: suspending until the release is approved)")
            engine.suspend()

    engine.atom_notifier.register("*", wait_for_approval)

    print("first run:")
    engine.run()
    print(f"flow state: {engine.storage.get_flow_state()}")
    for name in names:
        print(f"  {name:<18} {engine.storage.get_atom_state(name)}")

    print("release approved; second run:")
    engine.atom_notifier.deregister("*", wait_for_approval)
    engine.run()
    print(f"flow state: {engine.storage.get_flow_state()}")
    for name in names:
        print(f"  {name:<18} {engine.storage.get_atom_state(name)}")


if __name__ == "__main__":
    main()
