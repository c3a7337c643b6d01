"""Every command block marked ```bash runnable in the README and docs/ runs as written (each file's blocks in
order, in a fresh directory). The README's first block, the tiny pipeline, is the ``readme_quickstart`` run that
``test_train_launcher.py`` also checks."""

import pytest
from support.docs import PAGES, RUNNABLE, fresh_directory, run_block


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if RUNNABLE.search(p.read_text())], ids=lambda p: p.name)
def test_runnable_commands_run_as_written(page, tmp_path, request):
    blocks = RUNNABLE.findall(page.read_text())
    done = []
    if page.name == "README.md":
        work, first, r = request.getfixturevalue("readme_quickstart")
        assert first == blocks[0]
        done.append((first, r))
        blocks = blocks[1:]
    else:
        work = fresh_directory(tmp_path)
    done += [(block, run_block(block, work)) for block in blocks]
    for block, r in done:
        assert r.returncode == 0, f"{page.name}:\n{block}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
