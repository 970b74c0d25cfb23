import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    config.addinivalue_line("markers", "compile: compiles with torch.compile (inductor builds C++ "
                                       "kernels: seconds to tens of seconds on a small CPU)")
