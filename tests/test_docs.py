"""The documents cannot rot: every ```python block of README.md and docs/*.md runs, and every relative link
of README.md and docs/ (notes included) points at a file that exists.

The blocks of one document run in order in one namespace, like a notebook; each block is its own test, named
``document:line`` (the line of its opening fence), and runs the document's earlier blocks first when it runs
alone. A block that must not run here says so in the document, on the line before its fence:
``<!-- not run: needs a CUDA device -->``; its test skips with that reason. Cheap settings: ``fit`` trains at
most ``FIT_STEPS`` steps, files are written under a temporary folder, and fastgan's ops take their PyTorch
reference path (the kernels have tests of their own; under Triton's interpreter one step of the digits GAN
takes seconds); D's calibration for sampling, like ``fit``, trains at most ``FIT_STEPS`` steps.
"""
import re
from pathlib import Path

import pytest

import fastgan
import fastgan.train

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^(?:<!-- not run: (?P<reason>.+?) -->\n)?```python\n(?P<code>.*?)^```$", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")   # [text](target) and ![alt](target)
FIT_STEPS = 3


def blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line of the opening fence, code, reason it is not run or None)`` for each python block."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start("code")), m["code"], m["reason"]) for m in BLOCK.finditer(text)]


def at_most(fit):
    def fit_at_most(self, steps, *args, **kwargs):
        return fit(self, min(steps, FIT_STEPS), *args, **kwargs)
    return fit_at_most


def at_most_calibrated(generator, discriminator, real, latent_dim, steps=2000, *args,
                       _calibrate=fastgan.sampling.calibrate_discriminator, **kwargs):
    return _calibrate(generator, discriminator, real, latent_dim, min(steps, FIT_STEPS), *args, **kwargs)


CASES = [pytest.param(path, index, id=f"{path.relative_to(ROOT)}:{line}")
         for path in DOCUMENTS for index, (line, _, _) in enumerate(blocks(path))]
namespaces: dict[Path, tuple[dict, int]] = {}   # each document's namespace, and how many of its blocks ran


@pytest.mark.parametrize("path, index", CASES)
def test_python_block(path, index, monkeypatch, tmp_path_factory):
    document = blocks(path)
    line, _, reason = document[index]
    if reason:
        pytest.skip(f"{path.name}:{line}: {reason}")
    for trainer in (fastgan.GANTrainer, fastgan.train.ReplicaTrainer):
        monkeypatch.setattr(trainer, "fit", at_most(trainer.fit))
    monkeypatch.setattr(fastgan.sampling, "calibrate_discriminator", at_most_calibrated)
    folder = tmp_path_factory.getbasetemp() / "documents" / path.stem
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(folder)
    namespace, ran = namespaces.get(path, ({"__name__": "__main__"}, 0))
    with fastgan.ops.reference_path():
        for block_line, code, block_reason in document[ran:index + 1]:
            if not block_reason:   # an exception fails the test; its traceback names the document and line
                exec(compile(code, f"{path.relative_to(ROOT)}, block at line {block_line}", "exec"), namespace)
    namespaces[path] = (namespace, index + 1)


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))],
                         ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_exist(path):
    targets = [target.split("#")[0] for target in LINK.findall(path.read_text())
               if not re.match(r"[a-z]+:|#", target)]
    missing = [target for target in targets if not (path.parent / target).exists()]
    assert not missing, f"{path.relative_to(ROOT)} links to files that do not exist: {missing}"
