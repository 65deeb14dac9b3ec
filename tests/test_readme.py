"""The README's examples run as written."""

from __future__ import annotations

import doctest
import importlib.util
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _needs(code: str) -> list[str]:
    return re.findall(r"^import (\w+)", code, re.M)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code):
    for module in _needs(code):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    if module_is_gpu(code):
        cupy = pytest.importorskip("cupy")
        try:
            if cupy.cuda.runtime.getDeviceCount() < 1:
                pytest.skip("no CUDA device")
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            pytest.skip(f"no CUDA device: {exc}")
    if code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(code, {}, "README", None, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert runner.failures == 0
    else:
        exec(compile(code, "README.md", "exec"), {})


def module_is_gpu(code: str) -> bool:
    return "cupy" in _needs(code)
