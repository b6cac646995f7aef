"""The Mamba recurrence as ONNX ``Scan`` loops: the exporter's translation of the custom op that
:mod:`bsmamba.export_graph` traces (:func:`ssm_translation`), and the rewrite of each resulting
``bsmamba.SsmRecurrence`` node into a ``Scan`` (:func:`lower_recurrences`), with the band
passes' loops and LSTMs run over row chunks (:func:`chunk_band_lstms`).
"""

from __future__ import annotations

import torch

from bsmamba.export_graph import DOMAIN


def ssm_translation(onnx, onnxscript) -> dict:
    """The exporter's ``custom_translation_table`` entry that writes the traced recurrence op
    (``export_graph._ssm_recurrence``) as one ``bsmamba.SsmRecurrence`` node (declared to
    ``onnx`` here), for :func:`lower_recurrences` to replace."""
    custom = onnxscript.values.Opset(DOMAIN, 1)
    _register_schema(onnx)

    def _translate(u, delta, A, B, C):
        return custom.SsmRecurrence(u, delta, A, B, C)

    return {torch.ops.bsmamba.ssm_recurrence.default: _translate}


def _register_schema(onnx) -> None:
    """Declare ``bsmamba.SsmRecurrence`` to onnx (the exporter wants a schema for every node)."""
    if onnx.defs.has("SsmRecurrence", DOMAIN):
        return
    param = onnx.defs.OpSchema.FormalParameter
    onnx.defs.register_schema(
        onnx.defs.OpSchema(
            "SsmRecurrence",
            DOMAIN,
            1,
            inputs=[param(name, "T") for name in ("u", "delta", "A", "B", "C")],
            outputs=[param("y", "T")],
            type_constraints=[("T", ["tensor(float)"], "float32 only")],
        )
    )


# A band pass's Scan (a static length: the band count) runs over row chunks of about this many
# rows, each chunk's whole recurrence in an inner Scan, so that its (rows, d_state, d_inner)
# states stay in cache: onnxruntime, one thread, ad-hoc timing of one recurrence at (L 30,
# batch 1251, d_inner 128, d_state 12), min of 5: 95 ms unchunked, 78 / 76 / 74 / 96 ms with
# chunks of 32 / 64 / 128 / 512 rows (torch's scan: 53 ms). A time pass (frames: dynamic) keeps
# one Scan over all rows: its 30 rows per utterance are small already.
BAND_ROWS = 128


def lower_recurrences(proto):
    """Replace every ``bsmamba.SsmRecurrence(u, delta, A, B, C)`` node by an ONNX ``Scan``.

    The loop carries h (b, n, d) from zeros, d innermost so that every broadcast in the step runs
    along contiguous d-wide rows (with n innermost, onnxruntime's broadcasts crawl over 12-wide
    spans). Everything that needs no state is done outside, over the whole sequence: delta u in
    one product, and the axes the step broadcasts along (free reshapes), so the step is six ops:
    it reads delta_t (b, 1, d), (delta u)_t (b, 1, d), B_t (b, n, 1), C_t (b, 1, n) and A^T
    (n, d) from the outer graph, and emits y_t = C_t h_t (b, 1, d). A recurrence of static
    length (a band pass) runs in row chunks (:data:`BAND_ROWS`).
    """
    import onnx
    from onnx import helper

    proto = onnx.shape_inference.infer_shapes(proto)
    graph = proto.graph
    known = {v.name: v for v in (*graph.value_info, *graph.input)}
    nodes = []
    for i, node in enumerate(graph.node):
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        u, delta, A, B, C = node.input
        p = f"ssm{i}_"

        def unsqueeze(x, axis, out, p=p):
            return helper.make_node("Unsqueeze", [x, p + f"ax{axis}"], [p + out])

        nodes += [
            *(_ints(p + f"ax{k}", [k]) for k in (2, 3)),
            helper.make_node("Transpose", [A], [p + "At"], perm=[1, 0]),  # (n, d)
            helper.make_node("Mul", [delta, u], [p + "du"]),  # (L, b, d)
            unsqueeze(delta, 2, "dt4"),  # (L, b, 1, d)
            unsqueeze(p + "du", 2, "du4"),  # (L, b, 1, d)
            unsqueeze(B, 3, "B4"),  # (L, b, n, 1)
            unsqueeze(C, 2, "C4"),  # (L, b, 1, n)
        ]
        inputs = [p + x for x in ("dt4", "du4", "B4", "C4")]
        if _static_length(known.get(u)):
            nodes += _chunked_scan(p, inputs, u, p + "y4")
        else:
            nodes += _scan(p, inputs, p + "y4", _step_graph(p, p + "At"))
        nodes.append(helper.make_node("Squeeze", [p + "y4", p + "ax2"], [node.output[0]]))
    del graph.node[:]
    graph.node.extend(nodes)
    keep = [o for o in proto.opset_import if o.domain != DOMAIN]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)
    del graph.value_info[:]  # stale shapes around the replaced nodes; ORT infers its own
    return onnx.shape_inference.infer_shapes(proto)


def _ints(name: str, values: list[int]):
    from onnx import TensorProto, helper

    value = helper.make_tensor(name + "_value", TensorProto.INT64, [len(values)], values)
    return helper.make_node("Constant", [], [name], value=value)


def _static_length(info) -> bool:
    """Whether a value's dim 0 (the sequence) has a fixed size in the traced graph."""
    if info is None or not info.type.tensor_type.HasField("shape"):
        return False
    dims = info.type.tensor_type.shape.dim
    return len(dims) > 0 and dims[0].HasField("dim_value")


def _scan(p: str, inputs: list[str], y: str, body) -> list:
    """The recurrence over inputs (dt, du, B, C), each (L, rows, ...), from h0 = 0 -> y."""
    from onnx import helper

    scan = helper.make_node(
        "Scan", [p + "h0", *inputs], [p + "h_last", y], num_scan_inputs=4, body=body
    )
    return [*_zero_state(p, inputs[0], inputs[2], p + "h0"), scan]


def _zero_state(p: str, dt: str, B: str, out: str) -> list:
    """h0 = zeros (rows, n, d) for inputs dt (L, rows, 1, d), B (L, rows, n, 1)."""
    from onnx import TensorProto, helper

    return [
        helper.make_node("Shape", [dt], [p + "rows"], start=1, end=2),
        helper.make_node("Shape", [B], [p + "n"], start=2, end=3),
        helper.make_node("Shape", [dt], [p + "d"], start=3, end=4),
        helper.make_node("Concat", [p + "rows", p + "n", p + "d"], [p + "shape_h"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            [p + "shape_h"],
            [out],
            value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
        ),
    ]


def _row_chunks(p: str, rows: str) -> list:
    """Nodes for c = ceil(b / BAND_ROWS) chunks of R = ceil(b / c) rows, b = ``rows`` (a
    1-element shape): p+"c", p+"R", p+"pad" = c R - b (the rows to add), and the constants
    p+"zero", p+"one", p+"minus1"."""
    from onnx import helper

    def op(kind, ins, output):
        return helper.make_node(kind, [p + i for i in ins], [p + output])

    return [
        _ints(p + "zero", [0]),
        _ints(p + "one", [1]),
        _ints(p + "minus1", [-1]),
        _ints(p + "rows_max", [BAND_ROWS]),
        helper.make_node("Identity", [rows], [p + "b"]),
        op("Sub", ["rows_max", "one"], "rows_max_1"),
        op("Add", ["b", "rows_max_1"], "b_up"),
        op("Div", ["b_up", "rows_max"], "c"),
        op("Sub", ["c", "one"], "c_1"),
        op("Add", ["b", "c_1"], "b_up_c"),
        op("Div", ["b_up_c", "c"], "R"),
        op("Mul", ["c", "R"], "b_pad"),
        op("Sub", ["b_pad", "b"], "pad"),
    ]


def _split_rows(p: str, x: str, base: str, rank: int) -> list:
    """Nodes that pad the rows (axis 1) of ``x`` (of ``rank``) with p+"pad" zeros and split
    them into (c, R): -> base+"_chunks", of rank + 1."""
    from onnx import helper

    pads = [p + "zero"] * (2 * rank)
    pads[rank + 1] = p + "pad"
    return [
        helper.make_node("Concat", pads, [base + "_pads"], axis=0),
        helper.make_node("Pad", [x, base + "_pads"], [base + "_pad"]),
        helper.make_node("Shape", [x], [base + "_head"], end=1),
        helper.make_node("Shape", [x], [base + "_tail"], start=2),
        helper.make_node(
            "Concat",
            [base + "_head", p + "minus1", p + "R", base + "_tail"],
            [base + "_shape"],
            axis=0,
        ),
        helper.make_node("Reshape", [base + "_pad", base + "_shape"], [base + "_chunks"]),
    ]


def _merge_rows(p: str, y: str, axis: int, out: str) -> list:
    """The inverse of :func:`_split_rows` on an output: (.., c, R, ..) -> (.., b, ..)."""
    from onnx import helper

    return [
        helper.make_node("Shape", [y], [y + "_head"], end=axis),
        helper.make_node("Shape", [y], [y + "_tail"], start=axis + 2),
        helper.make_node(
            "Concat", [y + "_head", p + "minus1", y + "_tail"], [y + "_shape"], axis=0
        ),
        helper.make_node("Reshape", [y, y + "_shape"], [y + "_pad"]),
        _ints(y + "_axis", [axis]),
        helper.make_node("Slice", [y + "_pad", p + "zero", p + "b", y + "_axis"], [out]),
    ]


def _chunked_scan(p: str, inputs: list[str], u: str, out: str) -> list:
    """The recurrence over ``inputs`` (L, b, ...) as an outer Scan over c row chunks of R rows
    (:func:`_row_chunks`; the rows padded with zeros, which leave the real rows untouched),
    each chunk's whole recurrence an inner Scan -> ``out`` (L, b, 1, d)."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Shape", [u], [p + "rows"], start=1, end=2)]
    nodes += _row_chunks(p, p + "rows")
    for x in inputs:  # (L, b, a, e) -> (L, c, R, a, e)
        nodes += _split_rows(p, x, x, 4)
    q = p + "chunk_"  # the outer body: one chunk's (L, R, ...) inputs -> its y (L, R, 1, d)
    names = [q + x for x in ("dt", "du", "B", "C")]
    body = helper.make_graph(
        _scan(q, names, q + "y", _step_graph(p, p + "At")),
        q + "rows",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [None] * 4) for x in names],
        [helper.make_tensor_value_info(q + "y", TensorProto.FLOAT, [None] * 4)],
    )
    return nodes + [
        helper.make_node(
            "Scan",
            [x + "_chunks" for x in inputs],
            [p + "y_chunks"],
            num_scan_inputs=4,
            scan_input_axes=[1] * 4,
            scan_output_axes=[1],
            body=body,
        ),  # (L, c, R, 1, d)
        *_merge_rows(p, p + "y_chunks", 1, out),
    ]


def chunk_band_lstms(proto):
    """Run every ``LSTM`` node of static length (a band pass: the band count) over row chunks
    of ~:data:`BAND_ROWS` rows, one LSTM node per chunk inside a ``Scan``, so that each step's
    gates stay in cache. onnxruntime, one thread, ad-hoc timing of one bidirectional LSTM (64
    -> 128) at (L 30, batch 1251), min of 5: 206 ms whole, 186 / 190 / 197 ms in chunks of 64 /
    128 / 256 rows (torch's: 235 ms). Only the output Y is kept (all the exporter uses)."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.shape_inference.infer_shapes(proto)
    graph = proto.graph
    known = {v.name: v for v in (*graph.value_info, *graph.input)}
    nodes = []
    for i, node in enumerate(graph.node):
        ins = list(node.input) + [""] * (8 - len(node.input))
        if (
            node.op_type != "LSTM"
            or not _static_length(known.get(ins[0]))
            or len([o for o in node.output if o]) != 1
            or not node.output[0]
            or ins[4]  # sequence_lens
            or any(a.name == "layout" and a.i != 0 for a in node.attribute)
        ):
            nodes.append(node)
            continue
        p = f"lstm{i}_"
        X, W, R, B, _, h0, c0, P = ins
        nodes.append(helper.make_node("Shape", [X], [p + "rows"], start=1, end=2))
        nodes += _row_chunks(p, p + "rows")
        # X (L, b, in), initial_h and initial_c (dirs, b, hidden): the rows are axis 1 of each
        chunked = [(k, x) for k, x in (("X", X), ("h0", h0), ("c0", c0)) if x]
        for k, x in chunked:
            nodes += _split_rows(p, x, p + k, 3)
        q = p + "chunk_"
        names = [q + k for k, _ in chunked]
        inner = {k: q + k for k, _ in chunked}
        body_inputs = [inner["X"], W, R, B, "", inner.get("h0", ""), inner.get("c0", ""), P]
        while not body_inputs[-1]:
            body_inputs.pop()
        body = helper.make_graph(
            [helper.make_node("LSTM", body_inputs, [q + "Y"])],
            q + "rows",
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, [None] * 3) for x in names],
            [helper.make_tensor_value_info(q + "Y", TensorProto.FLOAT, [None] * 4)],
        )
        body.node[0].attribute.extend(node.attribute)
        nodes += [
            helper.make_node(
                "Scan",
                [p + k + "_chunks" for k, _ in chunked],
                [p + "Y_chunks"],
                num_scan_inputs=len(chunked),
                scan_input_axes=[1] * len(chunked),
                scan_output_axes=[2],
                body=body,
            ),  # (L, dirs, c, R, hidden)
            *_merge_rows(p, p + "Y_chunks", 2, node.output[0]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(proto)


def _step_graph(p: str, At: str):
    """One step of the recurrence as a Scan body (all float32); ``At`` is A^T (n, d), outside."""
    from onnx import TensorProto, helper

    def value(name, *dims):  # onnxruntime wants the rank of every body output
        dims = [1 if d == "1" else p + d for d in dims]
        return helper.make_tensor_value_info(p + name, TensorProto.FLOAT, dims)

    def node(op, inputs, output):
        return helper.make_node(op, [i if i == At else p + i for i in inputs], [p + output])

    body = [
        node("Mul", ["dt", At], "dtA"),  # (b, 1, d) * (n, d) -> (b, n, d)
        node("Exp", ["dtA"], "decay"),
        node("Mul", ["B", "du"], "inject"),  # (b, n, 1) * (b, 1, d) -> (b, n, d)
        node("Mul", ["decay", "h"], "kept"),
        node("Add", ["kept", "inject"], "h_next"),
        node("MatMul", ["C", "h_next"], "y"),  # (b, 1, n) @ (b, n, d) -> (b, 1, d)
    ]
    return helper.make_graph(
        body,
        p + "step",
        [
            value("h", *"bnd"),
            value("dt", "b", "1", "d"),
            value("du", "b", "1", "d"),
            value("B", "b", "n", "1"),
            value("C", "b", "1", "n"),
        ],  # fmt: skip
        [value("h_next", *"bnd"), value("y", "b", "1", "d")],
    )
