"""ONNX graph edits made when a bundle's network is loaded (the bundle itself is unchanged, only
the session's copy of the graph): keep only some outputs (:func:`prune_outputs`), cut the
positional encodings' ``Sin``/``Cos`` out for the host to compute (:func:`cut_encodings`), and
read the graph's input widths (:func:`graph_inputs`). Needs the ``onnx`` package."""

from __future__ import annotations

import numpy as np

from nerfexport.deploy.runtime import RuntimeSpecError

ENCODING_PREFIXES = {"encoding": "points", "view_encoding": "viewdirs"}   # node-name prefix -> raw graph input


def prune_outputs(model, outputs: tuple[str, ...]) -> None:
    """Keep only the graph ``outputs`` of an ONNX ``model`` and the nodes, weights and inputs they
    need (in place): the density alone reads no ``viewdirs``, so that input goes too (a TensorRT
    profile naming an input the graph lacks makes the provider rebuild its engine every session;
    callers feed only the inputs the session has)."""
    g = model.graph
    missing = set(outputs) - {o.name for o in g.output}
    if missing:
        raise RuntimeSpecError(f"the graph has no output(s) {', '.join(sorted(missing))}")
    keep = [o for o in g.output if o.name in outputs]
    del g.output[:]
    g.output.extend(keep)
    needed, kept = set(outputs), []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(i for i in n.input if i)
    del g.node[:]
    g.node.extend(reversed(kept))
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    ins = [i for i in g.input if i.name in needed]
    del g.input[:]
    g.input.extend(ins)


def cut_encodings(model) -> list[tuple[str, np.ndarray, str, str, np.dtype]]:
    """Cut the positional encodings' frequency scaling (``Tile``, ``Mul``), ``Sin`` and ``Cos`` out
    of a bundle graph (in place; :mod:`nerfexport.export.onnx_graph` names them ``{prefix}/tile``,
    ``{prefix}/scaled``, ``{prefix}/sin``, ``{prefix}/cos``, all fp32, an fp16 graph casting
    after them): their outputs become fp32 graph inputs. Returns, per encoding still in the
    graph, ``(raw input, scales (L,), sin input, cos input, float32)`` for the caller to compute
    ``sin`` and ``cos`` of ``raw @ F``, ``F = [scales[0] I, scales[1] I, ...]``."""
    from onnx import TensorProto, helper, numpy_helper
    g = model.graph
    nodes = {n.name: n for n in g.node}
    inits = {t.name: t for t in g.initializer}
    cuts = []
    for prefix, raw in ENCODING_PREFIXES.items():
        tl, mul, sn, cn = (nodes.get(f"{prefix}/{k}") for k in ("tile", "scaled", "sin", "cos"))
        if tl is None and mul is None and sn is None and cn is None:
            continue   # no such encoding (no view directions, or pruned away)
        if (None in (tl, mul, sn, cn) or tl.op_type != "Tile" or mul.op_type != "Mul" or list(tl.input[:1]) != [raw]
                or len(tl.input) != 2 or tl.input[1] not in inits or len(mul.input) != 2
                or mul.input[0] != tl.output[0] or mul.input[1] not in inits
                or list(sn.input) != [mul.output[0]] or list(cn.input) != [mul.output[0]]
                or sn.op_type != "Sin" or cn.op_type != "Cos"):
            raise RuntimeSpecError(f"the graph's {prefix} is not the form nerfexport exports; "
                                   "use encoding = \"graph\"")
        if sum(mul.output[0] in n.input for n in g.node) != 2 or sum(tl.output[0] in n.input for n in g.node) != 1:
            raise RuntimeSpecError(f"the graph's {prefix}/scaled feeds more than Sin and Cos; use encoding = \"graph\"")
        reps = numpy_helper.to_array(inits[tl.input[1]])
        freqs = numpy_helper.to_array(inits[mul.input[1]])
        L = freqs.size // 3
        # f = [2^0, 2^0, 2^0, 2^1, ...] as exported: column 3k + d is 2^k x_d, one multiply by a power
        # of two (exact); numpy's matmul would call BLAS, whose own threads fight the workers'
        scales = freqs.reshape(-1)[0::3].astype(np.float32) if L else np.zeros(0, np.float32)
        if (freqs.dtype != np.float32 or freqs.size != 3 * L or reps.tolist() != [1, L]
                or not np.array_equal(freqs.reshape(-1), np.repeat(scales, 3))):
            raise RuntimeSpecError(f"the graph's {prefix} frequencies are not nerfexport's; use encoding = \"graph\"")
        for n in (tl, mul, sn, cn):
            g.node.remove(n)
        for name in (tl.input[1], mul.input[1]):
            if not any(name in n.input for n in g.node):
                g.initializer.remove(inits[name])
        for name in (sn.output[0], cn.output[0]):
            g.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3 * L]))
        cuts.append((raw, scales, sn.output[0], cn.output[0], np.dtype(np.float32)))
    return cuts


def graph_inputs(model) -> dict[str, int]:
    """name -> width of a graph's (N, width) inputs."""
    out = {}
    for i in model.graph.input:
        dims = i.type.tensor_type.shape.dim
        out[i.name] = int(dims[-1].dim_value) if dims and dims[-1].dim_value else 3
    return out
