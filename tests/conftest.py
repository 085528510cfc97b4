import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("soak", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


import pytest  # noqa: E402

from sessionizer.core.native import CORE_ENV  # noqa: E402


@pytest.fixture(scope="module", params=["python", "native"])
def core(request):
    """Run a module's tests on each core: new_partition (and a replay subprocess) follow SESSIONIZER_CORE."""
    before = os.environ.get(CORE_ENV)
    os.environ[CORE_ENV] = request.param
    yield request.param
    if before is None:
        del os.environ[CORE_ENV]
    else:
        os.environ[CORE_ENV] = before
