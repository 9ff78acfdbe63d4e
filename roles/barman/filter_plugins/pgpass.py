"""pgpass_escape: a value as one field of a ~/.pgpass line, where a backslash and a colon are escaped with a
backslash (libpq's rule). A filter, because a backslash in a Jinja literal inside YAML is escaped again by
Ansible and ends up doubled."""


def pgpass_escape(value):
    return str(value).replace("\\", "\\\\").replace(":", "\\:")


class FilterModule:
    def filters(self):
        return {"pgpass_escape": pgpass_escape}
