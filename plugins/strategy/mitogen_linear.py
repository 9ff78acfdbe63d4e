"""Ansible's linear strategy run over Mitogen, when Mitogen is installed (`make setup` installs the
pinned version into .venv); Ansible's own linear strategy otherwise, with a warning.

Why: every task of ours is a short module on a remote host. Plain Ansible starts a new Python on the host
for each one (and unpacks the module there); Mitogen keeps one interpreter per host and user for the
whole run and sends modules over its connection. Measured on one host with nothing to change, site.yml
takes 30 s instead of 70 s (README, Benchmarks), and the test suite about half as long.

Mitogen reads host-key checking from Ansible's own setting (host_key_checking, or the host variable
ansible_host_key_checking), not from `-o StrictHostKeyChecking` in ssh arguments.

Opt out for one run with ANSIBLE_STRATEGY=linear.
"""

from __future__ import annotations

import os

from ansible.utils.display import Display

# ansible.cfg's ssh_args keep one SSH connection per host open for 60 s (ControlPersist) in this directory,
# and Mitogen's ssh uses them too: consecutive runs (a deploy, then a rollback) reuse the connection
# instead of opening new ones, which ufw's SSH limit (roles/common) would refuse after six in 30 s.
# Ansible's own ssh plugin creates the directory only when it chooses the ControlPath; Mitogen does not use
# that plugin. scripts/setup makes it too, for plays that run before this plugin loads.
os.makedirs(os.path.expanduser("~/.ansible/cp"), mode=0o700, exist_ok=True)

try:
    import ansible_mitogen.affinity
    import ansible_mitogen.loaders
    import ansible_mitogen.strategy
except ImportError:  # a controller without Mitogen: same results, plain Ansible's speed
    ansible_mitogen = None

# Mitogen pins its processes to CPUs: on a machine with fewer than four, its connection multiplexer gets CPU 0
# and the top-level process, every worker and every child of theirs (ssh, and each local command with what it
# starts) get CPU 1, all of them. On the 2-core test machine the suite's two scenarios, their test hosts
# (booted by a local command) and their Ansible runs all shared one CPU while the other stayed idle (per-CPU
# counters: 97 % idle). Below four CPUs, no pinning: the kernel places the processes.
if ansible_mitogen is not None and (os.cpu_count() or 1) < 4:
    ansible_mitogen.affinity.policy = ansible_mitogen.affinity.Policy()

# Before it sends a module, Mitogen finds the module_utils it imports by compiling each of their source files,
# again for every module of the run: a no-change site.yml compiled the same 150-odd files over and over, an
# eighth of the controller's CPU (py-spy). Each file is compiled once per run here; the rest is Mitogen's.
if ansible_mitogen is not None:
    import ansible_mitogen.module_finder

    _compiled = {}

    def _compile_once(source, filename, mode):
        key = (source, filename, mode)
        if key not in _compiled:
            _compiled[key] = compile(source, filename, mode)
        return _compiled[key]

    ansible_mitogen.module_finder.compile = _compile_once

_INTERPRETER_FACTS = "discovered_interpreter_"


class _OwnInterpreterFacts:
    """Keep a host's discovered Python on that host. Under Mitogen every task's result carries the
    discovered interpreter of the host it ran on, and Ansible gives the facts of a run_once result to
    every host of the play: after one run_once task on an Ubuntu 22.04 host, an Ubuntu 24.04 host of the
    same play would be told to run /usr/bin/python3.10. Ansible calls _set_always_delegated_facts(result,
    task) and then get_task_hosts(iterator, host, task) for each result with facts; between the two, the
    interpreter facts of a run_once result are set on its own host only."""

    def _set_always_delegated_facts(self, result, task):
        self._fd_facts_result = result
        return super()._set_always_delegated_facts(result, task)

    def get_task_hosts(self, iterator, task_host, task):
        hosts = super().get_task_hosts(iterator, task_host, task)
        result, self._fd_facts_result = getattr(self, "_fd_facts_result", None), None
        if task.run_once and result is not None and task.delegate_to is None:
            facts = result.get("ansible_facts") or {}
            own = {key: facts.pop(key) for key in list(facts) if key.startswith(_INTERPRETER_FACTS)}
            if own:
                self._variable_manager.set_host_facts(task_host.name, own)
        return hosts


if ansible_mitogen is not None:
    _Base = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)

    class StrategyModule(_OwnInterpreterFacts, ansible_mitogen.strategy.StrategyMixin, _Base):
        pass

else:
    from ansible.plugins.strategy.linear import StrategyModule as _Linear

    class StrategyModule(_Linear):
        def __init__(self, *args, **kwargs):
            Display().warning("Mitogen is not installed: using Ansible's plain linear strategy "
                              "(run `make setup` and activate .venv for the faster one)")
            super().__init__(*args, **kwargs)
