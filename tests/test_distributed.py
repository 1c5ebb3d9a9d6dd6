"""More than one device, more than one process, and a crash: training ends where one device ends.

Every test trains one small model with one branch per variant (``klv.VARIANTS``) in fresh
subprocesses (device counts, ``jax.distributed`` and crashes are per process) and compares
final weights with a plain one-device run from the same initial weights, the same data in the
same order and the same global batch:

* ``tf.distribute.MirroredStrategy`` over two logical CPU devices (TensorFlow);
* ``keras.distribution.DataParallel`` over two virtual CPU devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=2``, JAX);
* two processes on loopback, ``keras.distribution.initialize`` (``jax.distributed``, CPU
  collectives over gloo) + ``DataParallel``, each process feeding its half of every batch;
* ``keras.callbacks.BackupAndRestore``: a process that exits mid-epoch, a restart that resumes
  from the backup, final weights equal to an uninterrupted run (on the suite's backend).
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 1200  # seconds for any one process; the machine may be loaded

#: Shared by every script: the data, the model, and running it on one device.
COMMON = """
import json, os, sys
import numpy as np
import keras
import keras_lstm_variants as klv

BATCH, EPOCHS = 8, 2
rng = np.random.default_rng(0)
x = rng.normal(size=(16, 6, 2)).astype("float32")
y = rng.normal(size=(16, 1)).astype("float32")


def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 2))
    branches = [layer(4, name=name)(inputs) for name, (_, layer) in klv.VARIANTS.items()]
    outputs = keras.layers.Dense(1)(keras.layers.Concatenate()(branches))
    model = keras.Model(inputs, outputs)
    # SGD with momentum: optimizer state (restored by BackupAndRestore), and no Adam-style
    # normalization that would magnify float noise in near-zero gradients into O(lr) steps
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    return model


def save(path, weights):
    np.savez(path, *weights)


def initial(out):
    with np.load(out + ".initial.npz") as archive:
        return [archive[f"arr_{k}"] for k in range(len(archive.files))]


def one_device(out):
    model = build()
    save(out + ".initial.npz", model.get_weights())
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    save(out + ".single.npz", model.get_weights())
    return model
"""


def run_script(code, *args, backend, extra_env=None):
    """Run ``code`` in a fresh Python; fail with its output; return its stdout."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    env.update(extra_env or {})
    done = subprocess.run(
        [sys.executable, "-c", COMMON + code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
        check=False,
    )
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, f"exit {done.returncode}:\n{output}"
    return done.stdout


def load(path):
    with np.load(path) as archive:
        return [archive[f"arr_{k}"] for k in range(len(archive.files))]


def assert_same_training(out, name):
    """``out.<name>.npz`` equals the one-device run and training moved the weights."""
    initial, single, other = (load(f"{out}.{kind}.npz") for kind in ("initial", "single", name))
    assert len(single) == len(other) == len(initial)
    assert max(np.abs(a - b).max() for a, b in zip(initial, single, strict=True)) > 1e-2
    for k, (expected, actual) in enumerate(zip(single, other, strict=True)):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5, err_msg=f"weight {k}")


MIRRORED = """
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
out = sys.argv[1]
one_device(out)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
    model = build()
    model.set_weights(initial(out))
    mirrored = type(model.weights[0].value).__name__
model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
save(out + ".mirrored.npz", model.get_weights())
print(json.dumps({"variable": mirrored}))
"""


@pytest.mark.tensorflow_only("tf.distribute is TensorFlow's engine")
def test_mirrored_strategy_over_two_cpus_equals_one_device(tmp_path):
    pytest.importorskip("tensorflow")
    out = str(tmp_path / "run")
    report = json.loads(run_script(MIRRORED, out, backend="tensorflow").splitlines()[-1])
    assert "Mirrored" in report["variable"], report  # the weights live on both replicas
    assert_same_training(out, "mirrored")


DATA_PARALLEL = """
import jax

out = sys.argv[1]
assert len(jax.devices("cpu")) == 2, jax.devices()
one_device(out)
distribution = keras.distribution.DataParallel(devices=jax.devices("cpu"))
with distribution.scope():
    model = build()
    model.set_weights(initial(out))
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
replicas = len(model.weights[0].value.sharding.device_set)
batch_axes = distribution.get_data_layout((BATCH, 6, 2)).axes
save(out + ".parallel.npz", model.get_weights())
print(json.dumps({"replicas": replicas, "batch_axes": list(batch_axes)}))
"""


def test_data_parallel_over_two_virtual_devices_equals_one_device(tmp_path):
    pytest.importorskip("jax")
    out = str(tmp_path / "run")
    flags = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    stdout = run_script(DATA_PARALLEL, out, backend="jax", extra_env=flags)
    report = json.loads(stdout.splitlines()[-1])
    assert report["replicas"] == 2 and report["batch_axes"][0] == "batch", report
    assert_same_training(out, "parallel")


WORKER = """
import jax

out, port, process_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
keras.distribution.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
assert jax.process_count() == 2 and len(jax.devices()) == 2 and len(jax.local_devices()) == 1
# Each process passes its own rows (below), so Keras must not shard them again (with
# auto-sharding, a multi-process distribution accepts only a tf.data.Dataset).
distribution = keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
keras.distribution.set_distribution(distribution)
model = build()
model.set_weights(initial(out))
# Each process feeds its half of every global batch of 8: rows 4p..4p+3 of each batch.
mine = np.concatenate([np.arange(start + 4 * process_id, start + 4 * process_id + 4)
                       for start in range(0, len(x), BATCH)])
model.fit(x[mine], y[mine], batch_size=BATCH // 2, epochs=EPOCHS, shuffle=False, verbose=0)
if process_id == 0:
    save(out + ".multiprocess.npz", model.get_weights())
print(json.dumps({"process": process_id, "processes": jax.process_count()}))
"""


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_on_loopback_train_like_one_device(tmp_path):
    pytest.importorskip("jax")
    out = str(tmp_path / "run")
    run_script("one_device(sys.argv[1])", out, backend="jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    port = str(free_port())
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", COMMON + WORKER, out, port, str(process_id)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for process_id in (0, 1)
    ]
    try:
        outputs = [worker.communicate(timeout=TIMEOUT)[0] for worker in workers]
    finally:
        for worker in workers:  # ended by PID, whatever happened
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    reports = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    assert [r["process"] for r in reports] == [0, 1] and {r["processes"] for r in reports} == {2}
    assert_same_training(out, "multiprocess")


BACKUP = """
out, mode = sys.argv[1], sys.argv[2]
if mode == "single":
    one_device(out)
    raise SystemExit(0)


class Crash(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 0:  # mid-epoch: after a step of the second epoch
            print("crashing", flush=True)
            os._exit(3)


model = build()
model.set_weights(initial(out))
backup = keras.callbacks.BackupAndRestore(out + ".backup", save_freq="epoch")
callbacks = [backup, Crash()] if mode == "crash" else [backup]
model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)
save(out + ".resumed.npz", model.get_weights())
"""


def test_backup_and_restore_resumes_after_a_crash_mid_epoch(tmp_path):
    """The first process dies in epoch 2 (exit code 3, after epoch 1's backup); a second
    process with the same script resumes from the backup and ends with the weights of an
    uninterrupted run. (Keras 3.15 resumes at the start of the interrupted epoch: with
    ``save_freq=<steps>`` it would restore mid-epoch weights and replay the epoch's first
    batches, so the epoch backup is the exact one.)"""
    import keras

    backend = keras.backend.backend()
    out = str(tmp_path / "run")
    run_script(BACKUP, out, "single", backend=backend)
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    crashed = subprocess.run(
        [sys.executable, "-c", COMMON + BACKUP, out, "crash"],
        capture_output=True,
        text=True,
        env={**env, "KERAS_BACKEND": backend},
        timeout=TIMEOUT,
        check=False,
    )
    assert crashed.returncode == 3 and "crashing" in crashed.stdout, crashed.stderr[-3000:]
    assert os.path.exists(out + ".backup") and not os.path.exists(out + ".resumed.npz")
    run_script(BACKUP, out, "resume", backend=backend)
    assert not os.path.exists(out + ".backup")  # deleted at the end of a finished fit
    assert_same_training(out, "resumed")
