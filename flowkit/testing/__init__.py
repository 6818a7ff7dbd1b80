"""Reusable test suites for things users plug into flowkit.

``flowkit.testing.persistence.PersistenceBackendTests`` is the contract every
persistence backend passes (memory, SQLite, PostgreSQL, MySQL); subclass it
with a ``backend`` fixture to run it against your own backend;
``flowkit.testing.jobboards.JobBoardTests`` is the job board contract (memory,
SQL, Redis), run the same way with a ``make_board`` fixture.  Needs pytest.
``flowkit.testing.clock.VirtualClock`` is a clock a test moves by hand (an
hour of timers in no time); it needs nothing but flowkit.
"""

__all__ = ["persistence", "jobboards", "clock"]
