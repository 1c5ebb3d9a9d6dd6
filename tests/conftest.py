import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Console scripts (keras-lstm-variants, saved_model_cli, tensorboard) live beside this Python;
# put that directory first on PATH so subprocesses find them even where it is not on PATH
# (e.g. pyenv before a rehash, or a venv that was not activated).
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
