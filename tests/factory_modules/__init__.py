"""Modules the factory tests import (or must not import) by name; none registers anything."""
