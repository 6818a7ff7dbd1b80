"""Packaging for flowkit.

The project keeps its build configuration here (setuptools); tool settings live in
``tox.ini`` (pytest), ``ruff.toml`` and ``mypy.ini``.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent

WEB_REQUIRES = ["starlette>=0.37", "uvicorn>=0.29", "jinja2>=3.1", "python-multipart>=0.0.9"]
OTEL_REQUIRES = ["opentelemetry-api>=1.20", "opentelemetry-sdk>=1.20"]
METRICS_REQUIRES = ["prometheus_client>=0.17"]

TEST_REQUIRES = [
    "pytest>=7",
    "pytest-timeout>=2.1",
    # Drivers for the backend tests, which run against real servers when their URL is set.
    "psycopg[binary]>=3.1",
    "PyMySQL>=1.0",
    "redis>=4.5",
    # The dashboard's tests: its own extra, an HTTP client, and a browser driver (no browser download:
    # the tests launch the system's Chromium).
    *WEB_REQUIRES,
    "httpx>=0.27",
    "playwright>=1.40",
    # Spans are read back from the SDK's in-memory exporter; metrics scraped from prometheus_client's server.
    *OTEL_REQUIRES,
    *METRICS_REQUIRES,
]

setup(
    name="flowkit",
    version="0.1.0",
    description=(
        "Multi-step operations that finish or are undone: a TaskFlow-compatible "
        "workflow engine whose cost grows linearly with the flow"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["flowkit", "flowkit.*"]),
    package_data={
        "flowkit": ["py.typed"],
        # Alembic reads these at run time if the migrations ever ship them.
        "flowkit.persistence.migrations": ["*.ini", "*.mako"],
        "flowkit.web": ["templates/*.html", "templates/*.css"],
    },
    include_package_data=True,
    zip_safe=False,
    install_requires=[
        "networkx>=2.8",
        "futurist>=2.4",
        "oslo.utils>=6.0",
        # The embedded SQLite logbook (the persistence default) is built on SQLAlchemy.
        "sqlalchemy>=2",
        "alembic>=1.10",
        # The flowkit command's tables, colours and the progress bar (installed with the command it serves).
        "rich>=13",
    ],
    extras_require={
        "distributed": ["distributed>=2023.1"],
        "postgres": ["psycopg[binary]>=3.1"],
        "mysql": ["PyMySQL>=1.0"],
        "redis": ["redis>=4.5"],
        # executor="greenthreads": futurist's green-thread pool (eventlet; not in "test", it warns on import).
        "greenthreads": ["eventlet>=0.33"],
        # Benchmark-only: the benchmarks run the same flows on TaskFlow, and parked flows on DBOS, for comparison.
        "bench": ["taskflow==6.5.0", "dbos==3.4.0"],
        "web": WEB_REQUIRES,
        "otel": OTEL_REQUIRES,
        "metrics": METRICS_REQUIRES,
        "test": TEST_REQUIRES,
        "docs": ["sphinx>=7"],
        "lint": ["ruff>=0.17,<0.18", "mypy>=2.4,<3"],
    },
    entry_points={
        "console_scripts": ["flowkit=flowkit.cli:main"],
    },
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Developers",
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Typing :: Typed",
    ],
)
