"""``bench``'s anchors: ``torch.nn.LSTM`` / ``torch.nn.GRU`` timed like the Keras models."""

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
