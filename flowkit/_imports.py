"""Find an object by its ``"module:qualname"`` name.

This is the one place flowkit turns such a name into code.  Only names that
the caller's own code or its user's command line produced come here
directly; a name read from storage goes through :mod:`flowkit.factories`,
which checks it against the registered factories and the allowed modules
first and uses :func:`lookup` only for a module it has decided to trust.
"""

from __future__ import annotations

import importlib

__all__ = ["ResolveError", "split", "lookup", "resolve", "EXTRAS", "missing_extra"]

#: The optional dependency each extra of ``pip install 'flowkit[EXTRA]'`` installs, by module name.
EXTRAS = {
    "psycopg": "postgres",
    "psycopg2": "postgres",
    "pymysql": "mysql",
    "MySQLdb": "mysql",
    "redis": "redis",
    "distributed": "distributed",
}


def missing_extra(error: ImportError, what: str) -> ImportError:
    """``error`` (a driver that is not installed) as an ImportError that says which extra installs it.

    ``error`` itself when the missing module is none of :data:`EXTRAS`.
    """
    module = (error.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return error
    found = ImportError("%s needs %s, which is not installed: pip install 'flowkit[%s]'" % (what, module, extra))
    found.name = module
    return found


class ResolveError(ImportError):
    """``spec`` names no importable object.

    An :class:`ImportError`, as ``from module import name`` raises for a name
    that is not there.  ``missing`` is the part that was not found (a module
    or one attribute of the qualified name); ``reason`` says why without
    repeating ``spec``, for callers that word the message themselves.
    """

    def __init__(self, spec: str, missing: str, reason: str) -> None:
        super().__init__("cannot import %r: %s" % (spec, reason))
        self.spec = spec
        self.missing = missing
        self.reason = reason


def split(spec: str) -> tuple[str, str]:
    """``"module:qualname"`` as ``(module, qualname)``; ValueError when either part is missing."""
    module, sep, qualname = spec.partition(":")
    if not sep or not module or not qualname:
        raise ValueError("%r is not a 'module:qualname' name" % (spec,))
    return module, qualname


def lookup(root: object, qualname: str, spec: str) -> object:
    """Follow the dotted ``qualname`` from ``root`` (usually a module).

    Raises :class:`ResolveError` naming ``spec`` and the first attribute that
    is not there.
    """
    module = spec.partition(":")[0]
    found = root
    walked: list[str] = []
    for part in qualname.split("."):
        try:
            found = getattr(found, part)
        except AttributeError as error:
            owner = repr("%s:%s" % (module, ".".join(walked))) if walked else "module %r" % (module,)
            raise ResolveError(spec, part, "%s has no attribute %r" % (owner, part)) from error
        walked.append(part)
    return found


def resolve(spec: str) -> object:
    """Import the module of ``"module:qualname"`` and return the object the qualified name leads to.

    Raises ValueError when ``spec`` is not of that form, and
    :class:`ResolveError` when the module cannot be imported or has no such
    attribute.  An exception raised by the module's own code while it is
    imported propagates unchanged: it is a bug there, not a wrong name.
    """
    module_name, qualname = split(spec)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = error.name or module_name
        raise ResolveError(spec, missing, "%s: %s" % (type(error).__name__, error)) from error
    return lookup(module, qualname, spec)
