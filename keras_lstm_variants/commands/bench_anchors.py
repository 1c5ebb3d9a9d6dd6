"""``bench``'s anchors: ``torch.nn.LSTM`` / ``torch.nn.GRU`` timed like the Keras models.

They are timed in a process of their own (``python -m
keras_lstm_variants.commands.bench_anchors REQUEST``, Keras on its torch backend), never in
the TensorFlow or JAX process: building ``torch.optim.SGD`` imports ``torch._dynamo`` and, in
PyPI's CUDA build, triton's native library, which crashes (SIGSEGV) a process that already
holds TensorFlow's or XLA's LLVM. This module imports no backend at import time.
"""

import json
import os
import subprocess
import sys

#: The torch anchor of each stock Keras layer.
ANCHORS = {"keras.LSTM": "torch.nn.LSTM", "keras.GRU": "torch.nn.GRU"}


class TorchAnchor:
    """``torch.nn.LSTM``/``GRU`` (cuDNN on a GPU, oneDNN on a CPU) timed like the Keras models:
    ``train_on_batch`` is forward, MSE of the last output, backward and an SGD step;
    ``predict_on_batch`` is the forward pass without gradients; both take and return NumPy."""

    def __init__(self, kind, shape, seed=0):
        import torch

        torch.manual_seed(seed)
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        module = getattr(torch.nn, kind.split(".")[-1])
        self.rnn = module(shape.features, shape.units, batch_first=True).to(self.device)
        self.optimizer = torch.optim.SGD(self.rnn.parameters(), lr=0.01)
        self.output_shape = (None, shape.units)
        self.parameters = sum(p.numel() for p in self.rnn.parameters() if p.dim() == 2)

    def train_on_batch(self, x, y):
        torch = self.torch
        x, y = torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        outputs, _ = self.rnn(x)
        loss = torch.nn.functional.mse_loss(outputs[:, -1], y)
        loss.backward()
        self.optimizer.step()
        return loss.item()  # reads the loss back: waits for the device

    def predict_on_batch(self, x):
        with self.torch.no_grad():
            outputs, _ = self.rnn(self.torch.from_numpy(x).to(self.device))
            return outputs[:, -1].cpu().numpy()


def anchors_in_subprocess(shape, kinds, repeats, peak, threads):
    """The records of the torch anchors ``kinds`` at ``shape`` (a dict of the Shape's fields),
    timed in a fresh interpreter; ``(records, error)``, the error one line (a child killed by
    a signal says which)."""
    request = {"shape": shape, "kinds": kinds, "repeats": repeats, "peak": peak}
    request["threads"] = threads
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run(
        [sys.executable, "-m", __name__, json.dumps(request)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return [], f"the torch anchors' process {exit_status(done.returncode)}"
    return json.loads(done.stdout.strip().splitlines()[-1]), None


def exit_status(code):
    """``exited N`` or ``died by signal SIGSEGV`` for a child's return code."""
    import signal

    if code < 0:
        try:
            return f"died by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"died by signal {-code}"
    return f"exited {code}"


def _main(request):
    import torch

    from .bench_anchors import TorchAnchor  # the package's class, not __main__'s
    from .bench_timing import Shape, bench_shape

    torch.set_num_threads(request["threads"])
    shape = Shape(**request["shape"])
    records = bench_shape(
        shape,
        request["kinds"],
        (None,),
        request["repeats"],
        request["peak"],
        make=lambda kind, shape, jit: TorchAnchor(kind, shape),
    )
    print(json.dumps(records))


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]))
