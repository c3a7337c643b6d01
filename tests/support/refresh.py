"""Helpers shared by the refresh tests of several kinds."""


class FakeLabeller:
    """Scores an answer by whether it says 'good'; records the rows it was asked about."""
    name, pairwise = "fake", False

    def __init__(self):
        self.rows = []

    def scores(self, prompt, answers, row):
        self.rows.append((prompt, row))
        return [1.0 if "good" in a else 0.0 for a in answers], len(answers)
