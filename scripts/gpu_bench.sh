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
#    tables on stdout (also in gpu-bench.txt), in $RESULTS (default: the repository root).
#        scripts/gpu_bench.sh test
#    runs the backend-independent tests (every cell against the NumPy oracles, the layers' own
#    loops and PyTorch's kernels against keras.layers.RNN(cell)) on the GPU, under JAX and torch,
#    with float32 matrix products in full float32 (not TF32); logs in $RESULTS. BACKENDS
#    (default "jax torch") picks the backends, JOBS (default 8) the pytest-xdist workers; extra
#    arguments go to pytest.
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
run | test)
    mode=$1
    shift
    results=${RESULTS:-.}
    mkdir -p "$results"
    ls "$WHEELS"/keras-*.whl "$WHEELS"/keras_lstm_variants-*.whl >/dev/null ||
        { echo "no wheels in $WHEELS: run '$0 download' where PyPI is reachable" >&2; exit 2; }
    site=${SITE:-/tmp/klv-site}
    # --no-deps: keras's other requirements (numpy, h5py, rich, absl-py, ml-dtypes, packaging)
    # are on such machines already; this package's tensorflow requirement is skipped on purpose.
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" \
        "$WHEELS"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    # Keras's default backend is TensorFlow, which such a machine lacks: the bench's own
    # process imports Keras on JAX (each backend it measures runs in a subprocess).
    export KERAS_BACKEND=${KERAS_BACKEND:-jax}
    # JAX must not take 75% of the GPU up front: torch shares the device with it.
    export XLA_PYTHON_CLIENT_PREALLOCATE=false
    python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices()); \
print('torch', torch.__version__, torch.cuda.get_device_name(0))"
    if [ "$mode" = test ]; then
        # float32 products in float32: the tests' tolerances are float32's, not TF32's.
        export JAX_DEFAULT_MATMUL_PRECISION=highest TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=0
        tests=(tests/test_cells.py tests/test_layers.py tests/test_smoke.py tests/test_errors.py
            tests/test_fast_path.py tests/test_eager_path.py)
        status=0
        for backend in ${BACKENDS:-jax torch}; do
            KERAS_BACKEND=$backend python3 -m pytest -q -p no:cacheprovider -n "${JOBS:-8}" \
                "${tests[@]}" "$@" 2>&1 | tee "$results/gpu-tests-$backend.txt" || status=1
        done
        exit $status
    fi
    run_bench() {
        python3 -m keras_lstm_variants bench --backend jax,torch --sections speed "$@"
    }
    {
        run_bench --json "$results/gpu-bench.json" "$@"
        run_bench --batch 64 --time 1000 --features 64 --units 256 \
            --json "$results/gpu-bench-T1000.json" "$@"
    } | tee "$results/gpu-bench.txt"
    ;;
*)
    sed -n '2,21p' "$0" >&2
    exit 2
    ;;
esac
