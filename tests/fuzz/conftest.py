"""The fuzz suite's report: counts per category at the end of the run (and in $ENGINE_FUZZ_REPORT)."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:  # the subprocess cases import tests.fuzz.harness from the repository root
    sys.path.insert(0, REPO)

from tests.fuzz import harness  # noqa: E402


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not harness.RECORD:
        return
    table = harness.report_table()
    terminalreporter.write_sep("=", "fuzz report: inputs per category")
    terminalreporter.write_line(table)
    for area, name, category, detail in harness.FAILURES[:50]:
        terminalreporter.write_line(f"  {category}: {area}:{name}: {detail[:200]}")
    path = os.environ.get("ENGINE_FUZZ_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(table + "\n")
            for area, name, category, detail in harness.FAILURES:
                handle.write(f"- {category}: {area}:{name}: {detail}\n")
