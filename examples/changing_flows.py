"""A flow's code changes while a run of it is stopped: the resume is checked, planned and migrated.

A child process runs version 1 of a network provisioning flow (reserve a port, allocate
an IP, configure the router, notify the customer) against the SQLite logbook
``changing_flows.db`` and dies with ``os._exit`` while configuring.  Then the code is
"deployed" again, changed: ``allocate_ip`` is now called ``allocate_address``, and an
``audit`` task was added at the end.  This process:

1. prints the plan of the resume (``flowkit plan UUID``): the rename looks like a
   finished atom removed and a new one added, which the resume refuses;
2. tries to resume anyway: ``FlowChanged`` says what changed and what to do, before
   anything runs (without the check, the address would be allocated twice);
3. prints the plan with the migration (``flowkit plan UUID --rename
   allocate_ip=allocate_address``): the address is kept, configure runs again;
4. resumes with ``Migration(rename={"allocate_ip": "allocate_address"})`` and shows the
   logbook (``flowkit show``), with the version each atom ran with.
"""

import os
import subprocess
import sys

from flowkit import LinearFlow, Task
from flowkit.cli import main as flowkit_command
from flowkit.engines import load_from_detail, load_from_factory
from flowkit.exceptions import FlowChanged
from flowkit.factories import flow_factory
from flowkit.persistence.backends import fetch
from flowkit.versioning import Migration

URL = "sqlite:///changing_flows.db"
# Which deployment this process is: the child runs version 1, this process version 2.
CODE = 2


def say(text):
    print(text, flush=True)  # os._exit skips flushing


class Step(Task):
    def execute(self, **inputs):
        say("    %s" % (self.name,))
        if self.name == "configure" and CODE == 1:
            os._exit(70)  # the process dies while configuring the router
        return "%s-done" % (self.name,)


@flow_factory
def make_network_flow(customer):
    allocate = "allocate_ip" if CODE == 1 else "allocate_address"
    flow = LinearFlow("network").add(
        Step("reserve_port", provides="port"),
        Step(allocate, requires=["port"], provides="address"),
        Step("configure", requires=["address"], provides="config"),
        Step("notify", requires=["config"]),
    )
    if CODE == 2:
        flow.add(Step("audit"))
    return flow


def child():
    global CODE
    CODE = 1
    engine = load_from_factory(make_network_flow, ["ACME"], backend=fetch(URL))
    say(engine.flow_detail.uuid)
    engine.run()


def main():
    if os.path.exists("changing_flows.db"):
        os.remove("changing_flows.db")
    say("Version 1 runs in a child process, which dies while configuring:")
    run = subprocess.run([sys.executable, __file__, "child"], capture_output=True, text=True)
    uuid, *steps = run.stdout.split()
    for step in steps:
        say("    %s" % (step,))
    say("  the process died (exit status %d)" % (run.returncode,))

    say("\nVersion 2 is deployed: allocate_ip is renamed allocate_address, audit is added.")
    say("\n$ flowkit plan %s" % (uuid,))
    flowkit_command(["plan", uuid, "--backend", URL])

    backend = fetch(URL)
    with backend.get_connection() as conn:
        flow_detail = conn.get_flow_details(uuid)
    say("\nResuming without a migration:")
    try:
        load_from_detail(flow_detail, backend=backend)
    except FlowChanged as error:
        say("  FlowChanged: %s" % (error,))

    say("\n$ flowkit plan %s --rename allocate_ip=allocate_address" % (uuid,))
    flowkit_command(["plan", uuid, "--backend", URL, "--rename", "allocate_ip=allocate_address"])

    say("\nResuming with Migration(rename={'allocate_ip': 'allocate_address'}):")
    with backend.get_connection() as conn:
        flow_detail = conn.get_flow_details(uuid)
    engine = load_from_detail(
        flow_detail, backend=backend, migrate=Migration(rename={"allocate_ip": "allocate_address"})
    )
    engine.run()
    say("  flow state: %s" % (engine.storage.get_flow_state(),))
    say("\n$ flowkit show %s" % (uuid,))
    flowkit_command(["show", uuid, "--backend", URL])
    backend.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["child"]:
        child()
    else:
        main()
