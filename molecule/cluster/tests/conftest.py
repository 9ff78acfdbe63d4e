"""The cluster's hosts, for test_cluster.py and test_monitoring.py: testinfra's `host` fixture would run
each test once per host."""

import pytest

import testhelpers


@pytest.fixture(scope="session")
def hosts():
    """testinfra hosts by inventory name: lb, web1, web2, worker1, db, redis, backup1."""
    return {h.backend.get_hostname(): h for h in testhelpers.all_hosts()}


@pytest.fixture(scope="session")
def addresses(hosts):
    return {name: h.ansible.get_variables()["ansible_host"] for name, h in hosts.items()}
