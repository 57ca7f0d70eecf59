"""The test session runs in a temporary directory, so that the run directories a fit
writes (``outputs/`` by default, as PySR's) never land in the checkout."""
import pytest

# Importing it runs the command line.
collect_ignore = ["enhancements/__main__.py"]


@pytest.fixture(autouse=True, scope="session")
def _in_a_temporary_directory(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        yield
