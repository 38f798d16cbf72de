"""schemathesis's command line, with one CPython 3.11 bug kept out of the way.

Hypothesis describes the lambdas it filters with by parsing their source file with
`ast`; deep in schemathesis's generator for this document (34 event branches), CPython
3.11 then fails with "SystemError: AST constructor recursion depth mismatch" (fixed in
3.12), which schemathesis reports as a flaky run of the operation. The descriptions
only name strategies in messages, so they are left plain here.
"""

import sys

import hypothesis.internal.filtering as filtering
import hypothesis.internal.lambda_sources as lambda_sources


def plain(f):
    return "lambda"


lambda_sources.lambda_description = plain
filtering.lambda_description = plain

from schemathesis.cli import schemathesis  # noqa: E402

sys.argv[0] = "schemathesis"
sys.exit(schemathesis())
