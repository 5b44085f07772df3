"""The end of every test run says plainly which groups of tests were skipped (they did NOT run) and the command that
runs them: a skip must never read as a pass.

Expensive fixtures are session-scoped, not module-scoped: pytest-xdist may run another module's tests between two
tests of one module on a worker, and a module-scoped fixture would then be torn down and built again."""
from collections import defaultdict


def _reason(report) -> str:
    r = report.longrepr
    text = r[2] if isinstance(r, tuple) else str(r)
    return text.removeprefix('Skipped: ')


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    groups = defaultdict(list)                       # (file, reason) -> skipped test names ('' for a whole module)
    for rep in terminalreporter.stats.get('skipped', []):
        path, _, name = rep.nodeid.partition('::')
        groups[(path, _reason(rep))].append(name)
    if not groups: return
    tr = terminalreporter
    tr.section('SKIPPED GROUPS: these tests did not run', sep='=', yellow=True, bold=True)
    for (path, reason), names in sorted(groups.items()):
        what = 'the whole module' if names == [''] else f"{len(names)} test{'s' if len(names) > 1 else ''}"
        tr.write_line(f'{path}: {what} skipped. {reason}', yellow=True)
