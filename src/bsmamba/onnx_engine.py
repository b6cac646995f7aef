"""The onnxruntime engine: a file written by ``bsmamba export`` run behind the model's
interface, so ``bsmamba enhance --engine onnxruntime`` chunks and overlap-adds it exactly as the
torch engine does. Inference only: it reads the export's metadata, never the exporter.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

FORMAT = "bsmamba-spectral-core"  # the metadata every export carries (written by bsmamba.export)
FORMAT_VERSION = 1
_EXTRA = "pip install 'bsmamba[export]' (onnx, onnxscript, onnxruntime)"


def need(*names: str, what: str) -> list:
    """The modules ``names``, or a one-line error naming the missing one and the extra."""
    import importlib

    out = []
    for name in names:
        try:
            out.append(importlib.import_module(name))
        except ImportError:
            raise ValueError(f"{what} needs the '{name}' package: {_EXTRA}") from None
    return out


class OnnxModel(nn.Module):
    """An exported file behind the model's interface: ``forward(wav (B, S)) -> (B, S)``.

    The STFT pair (``bsmamba.frontend.Frontend`` with the file's settings) runs in torch around
    one onnxruntime call on the spectral core. ``threads``: onnxruntime's intra-op threads
    (0: its default). CPU only.
    """

    def __init__(self, path: str | Path, threads: int = 0):
        super().__init__()
        from bsmamba.frontend import Frontend

        (ort,) = need("onnxruntime", what="--engine onnxruntime")
        path = Path(path)
        if path.is_dir() or path.suffix == ".ckpt":
            raise ValueError(
                f"{path} is a checkpoint or run directory, not an export: make one with "
                f"`bsmamba export {path} OUT.onnx`, or use --engine torch"
            )
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {path} does not exist")
        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            msg = f"{path} cannot be read by onnxruntime ({type(e).__name__}: {e})"
            raise ValueError(msg) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not a bsmamba export (no '{FORMAT}' metadata); make one with "
                "`bsmamba export CKPT OUT.onnx`"
            )
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(
                f"{path} has export format {meta['format_version']}, newer than this bsmamba "
                f"reads ({FORMAT_VERSION}); upgrade bsmamba"
            )
        self.path = path
        self.config = json.loads(meta["model_config"])
        self.frontend = Frontend(**json.loads(meta["stft"]))

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, S) -> enhanced wav (B, S), float32."""
        spec = torch.view_as_real(self.frontend.stft(wav.detach().float().cpu())).contiguous()
        out = self.session.run(["enhanced"], {"spec": spec.numpy()})[0]
        est = torch.view_as_complex(torch.from_numpy(out))
        return self.frontend.istft(est, wav.shape[-1]).to(wav.device)


def load_onnx(path: str | Path, device: str = "cpu", threads: int = 0, **kwargs):
    """An :class:`bsmamba.enhance.Enhancer` that runs the exported file ``path`` in onnxruntime.

    Same chunking, overlap-add, resampling and downmixing as the torch engine; kwargs go to
    ``Enhancer`` (``chunk_s``, ``overlap_s``).
    """
    from bsmamba.enhance import Enhancer

    if device != "cpu":
        raise ValueError(
            f"--engine onnxruntime runs on the CPU, not on device {device!r}: use --device cpu "
            "(or --engine torch with the checkpoint for a GPU)"
        )
    model = OnnxModel(path, threads)
    enhancer = Enhancer(model, "cpu", **kwargs)
    enhancer.checkpoint = model.path
    return enhancer
