"""Rules the labeller tests name as ``rule:support.labels:<function>``."""


def nonempty(prompt, answer):
    """A trivial rule for the tiny tests: an answer with text beats an empty one."""
    return float(bool(answer.strip()))


def garbage(prompt, answer):
    return "yes"
