"""Seconds each test file took in a JUnit report, as tests/file_seconds.json, which orders the files for the workers.

    PYTEST_ADDOPTS=--junitxml=/tmp/junit.xml bash .ci/run
    python benchmarks/file_seconds.py /tmp/junit.xml > tests/file_seconds.json
"""

import json
import sys
from collections import defaultdict
from xml.etree import ElementTree


def file_seconds(report: str) -> dict[str, float]:
    seconds = defaultdict(float)
    for case in ElementTree.parse(report).iter("testcase"):
        module = case.get("classname", "").split(".")[-1]  # "tests.test_gan" -> "test_gan"
        seconds[f"{module}.py"] += float(case.get("time", 0))
    return dict(sorted(((name, round(s, 1)) for name, s in seconds.items()), key=lambda item: -item[1]))


if __name__ == "__main__":
    print(json.dumps(file_seconds(sys.argv[1]), indent=1))
