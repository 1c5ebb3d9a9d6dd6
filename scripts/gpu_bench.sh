#!/usr/bin/env bash
# The bench on a GPU machine that has CUDA, JAX and PyTorch but no TensorFlow and no network.
#
# 1. On a machine with PyPI access, from the repository root (once):
#        scripts/gpu_bench.sh download [PYTHON_VERSION]     # default 3.12
#    puts into .whl/ the wheels the GPU machine lacks: keras and the two pure dependencies it
#    does not usually have (namex, optree), and this package (built here, installed there
#    without its TensorFlow requirement). Copy the repository (with .whl/) to the GPU machine.
# 2. On the GPU machine, offline, from the repository root:
#        scripts/gpu_bench.sh run [extra bench arguments]
#    installs the wheels into a private directory (nothing of the machine's Python changes),
#    then runs `keras-lstm-variants bench --backend jax,torch`: our layers and the stock Keras
#    layers under JAX with XLA, Keras on torch, and torch.nn.LSTM / nn.GRU (cuDNN) as the
#    anchors, at the default and long shapes, then the default shape at T = 1000 (is the time per
#    step flat from T = 100 to 1000?). Results: gpu-bench.json, gpu-bench-T1000.json and the
#    tables on stdout (also in gpu-bench.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl
KERAS_VERSION=${KERAS_VERSION:-3.15.1}

case "${1:-}" in
download)
    version=${2:-3.12}
    mkdir -p "$WHEELS"
    platforms=()
    for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
        manylinux2014_x86_64 manylinux1_x86_64; do
        platforms+=(--platform "$tag")
    done
    python3 -m pip download --no-deps --only-binary=:all: --python-version "$version" \
        --implementation cp "${platforms[@]}" -d "$WHEELS" \
        "keras==$KERAS_VERSION" namex optree
    python3 -m pip wheel --no-deps --no-build-isolation -w "$WHEELS" .
    ls -l "$WHEELS"
    ;;
run)
    shift
    ls "$WHEELS"/keras-*.whl "$WHEELS"/keras_lstm_variants-*.whl >/dev/null ||
        { echo "no wheels in $WHEELS: run '$0 download' where PyPI is reachable" >&2; exit 2; }
    site=${SITE:-/tmp/klv-site}
    # --no-deps: keras's other requirements (numpy, h5py, rich, absl-py, ml-dtypes, packaging)
    # are on such machines already; this package's tensorflow requirement is skipped on purpose.
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" \
        "$WHEELS"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    # JAX must not take 75% of the GPU up front: torch shares the device with it.
    export XLA_PYTHON_CLIENT_PREALLOCATE=false
    python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices()); \
print('torch', torch.__version__, torch.cuda.get_device_name(0))"
    run_bench() {
        python3 -m keras_lstm_variants bench --backend jax,torch --sections speed "$@"
    }
    {
        run_bench --json gpu-bench.json "$@"
        run_bench --batch 64 --time 1000 --features 64 --units 256 \
            --json gpu-bench-T1000.json "$@"
    } | tee gpu-bench.txt
    ;;
*)
    sed -n '2,16p' "$0" >&2
    exit 2
    ;;
esac
