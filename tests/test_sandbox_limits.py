"""Pure unit tests of the sandbox's limit plumbing (no bubblewrap needed)."""
import os
import struct

import pytest

from orchestra_jax.tools import sandbox_limits
from orchestra_jax.tools.sandbox_limits import OutputCapture, count_user_processes, seccomp_filter


def test_output_capture_keeps_everything_under_the_cap():
    c = OutputCapture(10)
    for chunk in (b"ab", b"cd", b"ef"):
        c.feed(chunk)
    assert (c.text(), c.truncated, c.total) == ("abcdef", False, 6)


def test_output_capture_keeps_head_and_tail():
    c = OutputCapture(8)
    for i in range(100):
        c.feed(bytes([65 + i % 26]) * 3)      # AAABBBCCC...
    text = c.text()
    assert c.truncated and c.total == 300
    assert text.startswith("AAAB") and text.endswith("UVVV")
    assert "[292 bytes truncated]" in text


def test_output_capture_replaces_invalid_utf8():
    c = OutputCapture(100)
    c.feed(b"ok \xff\xfe end")
    assert c.text() == "ok \ufffd\ufffd end"


def test_count_user_processes_counts_us():
    assert count_user_processes(os.getuid()) >= 1


@pytest.mark.skipif(seccomp_filter() is None, reason="x86_64 only")
def test_seccomp_program_shape():
    prog = seccomp_filter()
    assert len(prog) % 8 == 0
    insns = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    n = len(insns)
    assert insns[-2] == (0x06, 0, 0, 0x7FFF0000)            # allow
    assert insns[-1] == (0x06, 0, 0, 0x00050001)            # errno EPERM
    denied = {k for code, jt, jf, k in insns[4:-2]}
    assert denied == set(sandbox_limits._DENIED_X86_64.values())
    for i, (code, jt, jf, k) in enumerate(insns[:-2]):
        if code in (0x15, 0x35):                            # every jump lands on allow/deny/next
            assert i + 1 + jt < n and i + 1 + jf < n
            if jt:
                assert i + 1 + jt == n - 1
