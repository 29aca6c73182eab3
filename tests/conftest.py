"""Shared test setup: offline hub, deterministic threads, fixture roots beside the repo."""
import os
from pathlib import Path

# A hub lookup without these hangs ~23 s before failing on this network-less machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def fixture_root(env_var: str, default: Path) -> Path:
    """The fixture folder: ``$env_var`` if set, else ``default`` (../shared/...)."""
    return Path(os.environ.get(env_var, str(default))).resolve()


TRELLIS_FIXTURES = fixture_root("SS4D_TRELLIS_FIXTURES", SHARED / "trellis_reference")
SS4D_FIXTURES = fixture_root("SS4D_SS4D_FIXTURES", SHARED / "ss4d_reference")


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        pytest.skip(f"{what} not found at {path} (expected ../shared beside the repo, or set the env var)")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on shared cores: one torch thread for the module (avoids OpenMP oversubscription).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
