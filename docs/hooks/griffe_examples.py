"""A griffe extension: the package's ``Example:`` sections are read as ``Examples:``.

Google style allows both spellings, but griffe reads only ``Examples:`` as the section
whose ``>>>`` lines are code; ``Example:`` would be an admonition of plain text.
"""

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
