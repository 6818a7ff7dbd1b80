"""Retry controllers: a flow with a ``retry=`` controller decides what happens when one
of its tasks fails.

* ``retry.Times(n)`` reverts the subflow and runs it again, up to n attempts in all.
* ``retry.ForEach(values)`` runs the subflow once per value until one attempt succeeds;
  the current value is provided to the tasks under the controller's ``provides`` name.

Only the controller's own subflow is reverted and re-run, never the tasks around it.
"""

from flowkit import engines, retry, task
from flowkit.patterns import linear_flow


class Prepare(task.Task):
    def execute(self):
        print("  prepare: runs once, outside the retried subflow")


class FlakyUpload(task.Task):
    """Fails on its first two attempts, then succeeds."""

    default_provides = "upload"

    def execute(self, attempt):
        print(f"  upload: attempt {attempt}")
        if attempt < 3:
            raise ConnectionError(f"connection reset on attempt {attempt}")
        return f"uploaded on attempt {attempt}"

    def revert(self, attempt, result, flow_failures):
        print(f"  upload: cleaning up after attempt {attempt}")


class Connect(task.Task):
    default_provides = "connection"

    def execute(self, server):
        print(f"  connect: trying {server}")
        if server != "db-3":
            raise ConnectionRefusedError(f"{server} refused the connection")
        return f"connected to {server}"

    def revert(self, server, result, flow_failures):
        print(f"  connect: giving up on {server}")


def times_example():
    print("retry.Times(3):")
    flow = linear_flow.Flow("upload-job").add(
        Prepare("prepare"),
        linear_flow.Flow("upload-with-retry", retry=retry.Times(3, provides="attempt")).add(
            FlakyUpload("upload")
        ),
    )
    results = engines.run(flow)
    print(f"  result: {results['upload']}")


def for_each_example():
    print("retry.ForEach(['db-1', 'db-2', 'db-3']):")
    servers = retry.ForEach(["db-1", "db-2", "db-3"], provides="server")
    flow = linear_flow.Flow("connect-job", retry=servers).add(Connect("connect"))
    results = engines.run(flow)
    print(f"  result: {results['connection']}")


def main():
    times_example()
    for_each_example()


if __name__ == "__main__":
    main()
