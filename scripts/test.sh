#!/usr/bin/env bash
# The whole test suite: everything on the default runtime (ai-edge-litert,
# numpy 2), then the numerics and model tests again on tflite-runtime 2.14,
# which needs numpy<2, in a venv of its own (.venv-tflite).
set -euo pipefail
cd "$(dirname "$0")/.."

.venv/bin/python -m pytest "$@"

if [ ! -x .venv-tflite/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv-tflite
    .venv-tflite/bin/python -m pip install -q --upgrade pip >/dev/null
    # opencv 4.10 is the last wheel built against numpy 1.
    .venv-tflite/bin/python -m pip install -q "tflite-runtime==2.14.0" "numpy<2" \
        "opencv-python-headless<4.11" pydantic paho-mqtt orjson \
        pytest pytest-timeout hypothesis jsonschema
    .venv-tflite/bin/python -m pip install -q --no-deps -e .
fi
echo "== the same numerics on tflite-runtime with numpy<2 =="
.venv-tflite/bin/python -m pytest -p no:cacheprovider \
    tests/test_quantize.py tests/test_model.py tests/test_delegates.py tests/test_modelfile.py
