#!/usr/bin/env bash
# The whole test suite: everything on the default runtime (ai-edge-litert,
# numpy 2), then the numerics and model tests again on tflite-runtime 2.14,
# which needs numpy<2, in a venv of its own (.venv-tflite).
set -euo pipefail
cd "$(dirname "$0")/.."

.venv/bin/python -m pytest "$@"

# Each side venv is (re)filled when pyproject.toml is newer than its stamp: a new
# dependency reaches venvs made before it.
if [ ! -x .venv-tflite/bin/python ] || [ pyproject.toml -nt .venv-tflite/.edged-installed ]; then
    [ -x .venv-tflite/bin/python ] || "${PYTHON:-python3}" -m venv .venv-tflite
    .venv-tflite/bin/python -m pip install -q --upgrade pip >/dev/null
    # opencv 4.10 is the last wheel built against numpy 1.
    .venv-tflite/bin/python -m pip install -q "tflite-runtime==2.14.0" "numpy<2" \
        "opencv-python-headless<4.11" pydantic paho-mqtt orjson simplejpeg \
        pytest pytest-timeout hypothesis jsonschema
    .venv-tflite/bin/python -m pip install -q --no-deps -e .
    touch .venv-tflite/.edged-installed
fi
echo "== the same numerics on tflite-runtime with numpy<2 =="
.venv-tflite/bin/python -m pytest -p no:cacheprovider \
    tests/numerics/test_quantize.py tests/inference/test_model.py tests/inference/test_delegates.py tests/inference/test_modelfile.py

# Python 3.13 (Debian 13 / Raspberry Pi OS trixie): numerics, model, inspect and one
# daemon run, in a venv of its own. Skipped, saying so, where no 3.13 is installed.
py313=""
for candidate in "${PYTHON313:-}" python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python3.13; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' \
            >/dev/null 2>&1; then
        py313=$candidate
        break
    fi
done
if [ -z "$py313" ]; then
    echo "== Python 3.13 stage skipped: no python3.13 found (set PYTHON313=/path/to/python3.13) =="
    exit 0
fi
if [ ! -x .venv-py313/bin/python ] || [ pyproject.toml -nt .venv-py313/.edged-installed ]; then
    [ -x .venv-py313/bin/python ] || "$py313" -m venv .venv-py313
    .venv-py313/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv-py313/bin/python -m pip install -q -e '.[dev]'
    touch .venv-py313/.edged-installed
fi
echo "== the numerics, model, inspect and a daemon run on Python 3.13 =="
.venv-py313/bin/python -m pytest -p no:cacheprovider -W error::DeprecationWarning \
    tests/numerics/test_quantize.py tests/inference/test_model.py tests/inference/test_inspect.py tests/inference/test_field_models.py \
    "tests/service/test_daemon.py::test_received_floats_equal_the_models_dequantized_outputs"
