import pytest


@pytest.fixture(autouse=True, scope="module")
def each_core(core):
    """Every test here runs on the pure-Python core and on the compiled one."""
    return core
