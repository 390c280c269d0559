"""The walkthrough in docs/backprop.md runs, and prints what it shows.

Each ```python block runs in one shared namespace, in order; the ```text block
right after it must be what it printed: the same words, and the same numbers up
to one unit in the fourth decimal (the page prints at most four, and
a value on a rounding boundary may round the other way on another CPU, whose
last bits differ). To regenerate the outputs after an intended change:
MINICNN_UPDATE_DOCS=1 python -m pytest tests/test_docs.py
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import minicnn
from minicnn.fileio import write_text_atomic

DOC = Path(__file__).resolve().parents[1] / "docs" / "backprop.md"
BLOCK = re.compile(r"```python\n(.*?)```\n(?:\n```text\n(.*?)```\n)?", re.S)
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
DOC_DECIMALS = 4  # the walkthrough prints numbers to at most four decimals


def words_and_numbers(text: str) -> tuple[str, list[float]]:
    """The text with each number replaced by '#' (whitespace collapsed: numpy pads
    columns to the widest number), and the numbers."""
    return " ".join(NUMBER.sub("#", text).split()), [float(v) for v in NUMBER.findall(text)]


def same_output(printed: str, shown: str) -> bool:
    """What a block printed matches the page: the same words, and numbers that differ
    by no more than one unit in the last decimal the page prints."""
    (words, numbers), (shown_words, shown_numbers) = map(words_and_numbers, (printed, shown))
    unit = 10.0 ** -DOC_DECIMALS
    return words == shown_words and len(numbers) == len(shown_numbers) and all(
        abs(a - b) <= unit * 1.0001 for a, b in zip(numbers, shown_numbers))


def run_blocks(text: str) -> list[tuple[re.Match, str]]:
    namespace: dict = {}
    results = []
    for match in BLOCK.finditer(text):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(match.group(1), f"{DOC.name} block {len(results) + 1}", "exec"), namespace)
        results.append((match, printed.getvalue()))
    return results


def test_walkthrough_runs_and_matches_its_printed_output():
    text = DOC.read_text()
    try:
        results = run_blocks(text)
    finally:
        minicnn.set_floatx("float32")
    assert len(results) >= 8, "the walkthrough lost its code blocks"
    if os.environ.get("MINICNN_UPDATE_DOCS"):
        for match, printed in reversed(results):
            start, end = match.span()
            replacement = f"```python\n{match.group(1)}```\n\n```text\n{printed}```\n"
            text = text[:start] + replacement + text[end:]
        write_text_atomic(DOC, text)
        results = run_blocks(text)
    for number, (match, printed) in enumerate(results, start=1):
        shown = match.group(2)
        assert shown is not None, f"block {number} has no ```text output block after it"
        long = [v for v in NUMBER.findall(shown) if len(re.split(r"[.eE]", v + ".")[1]) > DOC_DECIMALS]
        assert not long, (f"block {number} shows {long}: more than {DOC_DECIMALS} decimals are "
                          "the last bits of one machine; round what the block prints")
        assert same_output(printed, shown), (
            f"block {number} printed\n{printed}\nbut the page shows\n{shown}")


def test_readme_gradient_check_prints_what_the_readme_shows():
    """The README's "Check a gradient yourself" block, run as written: its trailing
    comment lines are its output, line by line, except that "< B" in a shown line
    stands for a number below B: roundoff digits differ from CPU to CPU, the
    bound does not."""
    number = r"[-+]?[0-9.]+(?:e[-+]?[0-9]+)?"
    bound = re.compile(rf"< ({number})")

    def printed_as_shown(printed: str, shown: str) -> bool:
        parts = bound.split(shown)  # text, bound, text, bound, ..., text
        pattern = "".join(re.escape(part) if i % 2 == 0 else f"({number})"
                          for i, part in enumerate(parts))
        match = re.fullmatch(pattern, printed)
        return match is not None and all(float(value) < float(limit)
                                         for value, limit in zip(match.groups(), parts[1::2]))

    assert printed_as_shown("x: error 4.3e-09", "x: error < 1e-7")
    assert not printed_as_shown("x: error 2.0e-07", "x: error < 1e-7")
    assert not printed_as_shown("kernel: error 4.3e-09", "x: error < 1e-7")

    readme = (DOC.parents[1] / "README.md").read_text()
    section = readme.split("## Check a gradient yourself", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = [line[2:] for line in code.splitlines() if line.startswith("# ")]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md gradient check", "exec"), {})
    finally:
        minicnn.set_floatx("float32")
    lines = printed.getvalue().splitlines()
    assert len(lines) == len(shown), f"printed\n{printed.getvalue()}\nbut the README shows\n{shown}"
    for line, expected in zip(lines, shown):
        assert printed_as_shown(line, expected), f"printed {line!r}, the README shows {expected!r}"


def test_readme_tutorial_listing_runs_as_written(monkeypatch):
    """The "The tutorial, in minicnn" listing, verbatim except for less data and one
    epoch: every line of it must run (no elided layers, no undefined names)."""
    import numpy as np
    from minicnn.datasets import cifar10

    readme = (DOC.parents[1] / "README.md").read_text()
    section = readme.split("## The tutorial, in minicnn", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    rng = np.random.default_rng(0)

    def tiny(path=None, **kwargs):
        assert path == "../shared/datasets/cifar-10-python.tar.gz"
        images = rng.integers(0, 256, (34, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, (34, 1), dtype=np.uint8)
        return (images, labels), (images[:4], labels[:4])
    monkeypatch.setattr(cifar10, "load_data", tiny)
    assert "epochs=20" in code
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code.replace("epochs=20", "epochs=1"), "README tutorial", "exec"), namespace)
    assert namespace["model"].count_params() == 1_288_842
    assert len(namespace["model_history"].history["val_acc"]) == 1


def test_output_comparison_tolerates_the_last_decimal_only():
    assert same_output("loss: 0.4171\n[[ 1.  0.]\n [-1.  2.]]", "loss: 0.4170\n[[ 1. 0.]\n [-1. 2.]]")
    assert not same_output("loss: 0.4172", "loss: 0.4170")          # two units: a real change
    assert not same_output("dW: [37. 48.]", "dW: [37. 47.]")
    assert not same_output("dW: [37. 47. 0.]", "dW: [37. 47.]")     # a number more or less
    assert not same_output("passed: False", "passed: True")
