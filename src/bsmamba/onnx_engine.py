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
STREAM_FORMAT = "bsmamba-stream-step"  # written by `bsmamba export --stream` (stream_export)
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


def _session(path: Path, threads: int, fmt: str):
    """An onnxruntime session on ``path`` (CPU) and its metadata, refused with one line when
    the file is missing, unreadable, no bsmamba export, of a newer format, or of the other
    kind (offline ``fmt`` = FORMAT vs streaming STREAM_FORMAT)."""
    (ort,) = need("onnxruntime", what="--engine onnxruntime")
    if path.is_dir() or path.suffix == ".ckpt":
        flag = " --stream" if fmt == STREAM_FORMAT else ""
        raise ValueError(
            f"{path} is a checkpoint or run directory, not an export: make one with "
            f"`bsmamba export {path} OUT.onnx{flag}`, or use --engine torch"
        )
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist")
    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ValueError(
            f"{path} cannot be read by onnxruntime ({type(e).__name__}: {e})"
        ) from None
    meta = session.get_modelmeta().custom_metadata_map
    got = meta.get("format")
    if got == STREAM_FORMAT and fmt == FORMAT:
        raise ValueError(
            f"{path} is a streaming export (`bsmamba export --stream`): run it with "
            "`bsmamba enhance --stream --engine onnxruntime`, or export without --stream"
        )
    if got == FORMAT and fmt == STREAM_FORMAT:
        raise ValueError(
            f"{path} is an offline export and cannot stream: export the causal checkpoint with "
            "`bsmamba export CKPT OUT.onnx --stream`, or drop --stream"
        )
    if got != fmt:
        raise ValueError(
            f"{path} is not a bsmamba export (no '{fmt}' metadata); make one with "
            "`bsmamba export CKPT OUT.onnx" + (" --stream`" if fmt == STREAM_FORMAT else "`")
        )
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has export format {meta['format_version']}, newer than this bsmamba "
            f"reads ({FORMAT_VERSION}); upgrade bsmamba"
        )
    return session, meta


class OnnxModel(nn.Module):
    """An exported file behind the model's interface: ``forward(wav (B, S)) -> (B, S)``.

    The STFT pair (``bsmamba.frontend.Frontend`` with the file's settings) runs in torch around
    one onnxruntime call on the spectral core. ``threads``: onnxruntime's intra-op threads
    (0: its default). CPU only.
    """

    def __init__(self, path: str | Path, threads: int = 0):
        super().__init__()
        from bsmamba.frontend import Frontend

        path = Path(path)
        self.session, meta = _session(path, threads, FORMAT)
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

    _check_cpu(device)
    model = OnnxModel(path, threads)
    enhancer = Enhancer(model, "cpu", **kwargs)
    enhancer.checkpoint = model.path
    return enhancer


def load_onnx_stream(path: str | Path, device: str = "cpu", threads: int = 0, chunk: int = 128):
    """A streaming :class:`bsmamba.enhance.Enhancer` on a file from ``bsmamba export --stream``:
    each recording goes through an :class:`OnnxStreamer` in chunks of ``chunk`` samples, as
    ``enhance --stream`` does with the torch engine."""
    from bsmamba.stream import StreamingEnhancer

    _check_cpu(device)
    if chunk < 1:  # before the file is read
        raise ValueError(f"stream chunk must be >= 1 sample, got {chunk}")
    streamer = OnnxStreamer(path, threads)
    return StreamingEnhancer(streamer, chunk, "cpu", streamer.path)


def _check_cpu(device: str) -> None:
    if device != "cpu":
        raise ValueError(
            f"--engine onnxruntime runs on the CPU, not on device {device!r}: use --device cpu "
            "(or --engine torch with the checkpoint for a GPU)"
        )


class OnnxStreamer:
    """:class:`bsmamba.stream.Streamer`'s interface on a file from ``bsmamba export --stream``.

    ``process(chunk (n,)) -> (m,)``: the enhanced samples that became final (m may be 0; the
    same samples at the same time as the torch Streamer); ``flush() -> (r,)``: the rest, after
    which the outputs add up to as many samples as went in, and the stream is reset. numpy in
    -> float32 numpy out; a tensor in -> a tensor out. Mono, at the model's rate. One
    onnxruntime call per complete hop of input; ``threads``: its intra-op threads (0: default).
    ``latency`` is in samples, ``config`` the model's config.
    """

    def __init__(self, path: str | Path, threads: int = 0):
        import numpy as np

        path = Path(path)
        self.session, meta = _session(path, threads, STREAM_FORMAT)
        self.path = path
        self.config = json.loads(meta["model_config"])
        stream = json.loads(meta["stream"])
        stft = json.loads(meta["stft"])
        self.sample_rate, self.n_fft = stft["sample_rate"], stft["n_fft"]
        self.hop, self.delay = stream["hop"], stream["delay_calls"]
        self.latency = stream["latency_samples"]
        # Two sets of state buffers, each bound once as the inputs of one IOBinding and the
        # outputs of the other: a call reads one set and writes the other in place, then the
        # two swap (no state is copied or allocated per call). samples, last and enhanced are
        # fixed buffers too, filled or read in place.
        ort = need("onnxruntime", what="--engine onnxruntime")[0]
        sets = [{s["name"]: np.zeros(s["shape"], np.dtype(s["dtype"])) for s in stream["states"]}
                for _ in range(2)]  # fmt: skip
        self._samples = np.zeros((1, self.hop), np.float32)
        self._last = np.zeros(1, bool)
        self._enhanced = np.zeros((1, self.hop), np.float32)
        value = ort.OrtValue.ortvalue_from_numpy
        self._bindings = []
        for src, dst in ((sets[0], sets[1]), (sets[1], sets[0])):
            io = self.session.io_binding()
            io.bind_ortvalue_input("samples", value(self._samples))
            io.bind_ortvalue_input("last", value(self._last))
            io.bind_ortvalue_output("enhanced", value(self._enhanced))
            for name in src:
                io.bind_ortvalue_input(name, value(src[name]))
                io.bind_ortvalue_output(f"{name}_next", value(dst[name]))
            self._bindings.append((io, src, dst))
        self.reset()

    def reset(self) -> None:
        import numpy as np

        for _, src, _ in self._bindings:
            for buf in src.values():
                buf.fill(0)
        self._turn = 0  # which binding runs next
        self._state = self._bindings[0][1]  # the current states
        self._pending = np.zeros(0, np.float32)  # input not yet a whole hop
        self._recent = np.zeros(0, np.float32)  # the last n_fft input samples (for flush)
        self._received = 0
        self._returned = 0  # samples output so far
        self._calls = 0
        self._tensor_io = False

    def process(self, chunk):
        """chunk (n,) -> the enhanced samples now final (m,)."""
        import numpy as np

        x = self._array(chunk)
        self._received += len(x)
        self._recent = np.concatenate([self._recent, x])[-self.n_fft :]
        self._pending = np.concatenate([self._pending, x])
        out = []
        while len(self._pending) >= self.hop:
            out.append(self._call(self._pending[: self.hop]))
            self._pending = self._pending[self.hop :]
        y = np.concatenate([np.zeros(0, np.float32), *out])
        self._returned += len(y)
        return self._back(y)

    def flush(self):
        """The remaining output (as many samples as went in, all told); then a new stream."""
        import numpy as np

        n, hop = self._received, self.hop
        if n == 0:
            out = np.zeros(0, np.float32)
        else:
            # as torch.stft: a short input extended with zeros, then reflected about its end
            total = max(n, self.n_fft // 2 + 1)
            first = n - len(self._recent)  # index of _recent[0]
            sig = np.concatenate([self._recent, np.zeros(total - n, np.float32)])

            def at(p):  # the padded signal at positions p (at or beyond this call's start)
                p = np.where(p >= total, 2 * (total - 1) - p, p)
                return sig[p - first]

            frames = total // hop + 1  # frames 0 .. frames-1, as torch.stft
            calls = frames + self.delay // 2 - 1  # frame f is computed by call f + delay/2 - 1
            ys = [self._call(at(np.arange(c * hop, (c + 1) * hop)))
                  for c in range(self._calls, calls)]  # fmt: skip
            ys.append(self._call(np.zeros(hop, np.float32), last=True))  # the last frame's tap
            ola, env = self._state["ola"][0], self._state["ola_env"][0]
            ys.append(ola / np.maximum(env, 1e-11))  # no frame comes after: all final
            out = np.concatenate(ys)[: n - self._returned]
        tensor = self._tensor_io
        self.reset()
        self._tensor_io = tensor
        return self._back(out)

    # ---- internals
    def _call(self, samples, last: bool = False):
        """One graph call on one hop; returns its output if it lies after sample 0."""
        import numpy as np

        io, _, dst = self._bindings[self._turn]
        self._samples[0] = samples
        self._last[0] = last
        self.session.run_with_iobinding(io)
        self._turn, self._state = 1 - self._turn, dst
        self._calls += 1
        return self._enhanced[0].copy() if self._calls > self.delay else np.zeros(0, np.float32)

    def _array(self, chunk):
        import numpy as np

        self._tensor_io = isinstance(chunk, torch.Tensor)
        x = chunk.detach().cpu().numpy() if self._tensor_io else np.asarray(chunk)
        if x.ndim != 1:
            raise ValueError(f"expected a mono chunk of samples (n,), got shape {x.shape}")
        return x.astype(np.float32, copy=False)

    def _back(self, y):
        return torch.from_numpy(y) if self._tensor_io else y
