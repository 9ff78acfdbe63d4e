"""roles/app's one reading of a migration tool's output (`flask db heads`, `flask db current` or the
app's own commands): the first word of the last line that names a revision, such as `0003 (head)`.
Apps may log other lines (warnings, their own start-up messages) around it; those are skipped."""

from __future__ import annotations

import re

REVISION_LINE = re.compile(r"^[0-9A-Za-z_-]+( \(.*\))?\s*$")


def migration_revision(lines, none: str = "none") -> str:
    """The revision named last in `lines` (a command's stdout_lines), or `none` when no line names one."""
    found = [line.split()[0] for line in lines or [] if REVISION_LINE.match(line)]
    return found[-1] if found else none


class FilterModule:
    def filters(self):
        return {"migration_revision": migration_revision}
