"""The package's layering (pyproject.toml's import-linter contracts) holds, and the CLI reaches the ops through
at most 7 modules: a newcomer walks the package from the top in a few steps."""
import functools
import subprocess
import sys
from pathlib import Path

import grimp


def test_import_linter_contracts_are_kept():
    # in a process of its own: import-linter reconfigures logging (it disables the loggers that exist)
    done = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports; exit(lint_imports())"],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr   # every contract kept
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_the_cli_reaches_the_ops_in_at_most_seven_levels():
    graph = grimp.build_graph("fastgan")

    @functools.lru_cache(None)
    def chain(module: str) -> tuple[str, ...]:   # the longest import chain from module to its first ops module
        if module.startswith("fastgan.ops"):
            return (module,)
        below = [chain(m) for m in graph.find_modules_directly_imported_by(module)]
        longest = max((c for c in below if c), key=len, default=())
        return (module, *longest) if longest else ()

    longest = chain("fastgan.app.cli")
    assert longest and len(longest) <= 7, " > ".join(longest)
