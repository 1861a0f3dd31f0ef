"""Convert the published AttendAffectNet checkpoints into aanbench model files
(the converter behind :mod:`aanbench_plugins.commands.import_aan`; it imports torch).

The authors (Thao et al. 2020, github.com/ivyha010/AttendAffectNet) published
Feature AttendAffectNet models as legacy ``torch.save`` pickles of whole
modules. :func:`convert_checkpoint` reads one with the restricted reader of
:mod:`aanbench.pluginkit.legacy_pickle` (nothing from the file runs), takes the
hyper-parameters from the pickled attributes (heads, layers, epsilon, dropout,
``d_model``, which projection takes which input) and the forward pass from the
class source text stored in the file (parsed with :mod:`ast` as data, never
executed), and writes our own model file (:mod:`aanbench.modelfile`, model
``feature-aan``) that loads with ``torch.load(weights_only=True)``.

What the stored sources say (checked on conversion, refused if different):

- every variant: the Annotated-Transformer pre-norm ``EncoderLayer``
  (``x + drop(sublayer(norm(x)))``), the authors' ``LayerNorm``
  (``a_2 * (x - mean) / (std + eps) + b_2``, unbiased std),
  ``MultiHeadedAttention`` with four linears (q, k, v, out) and a final
  ``Encoder`` norm; tokens averaged by ``AvgPool1d`` over all tokens;
- ``video_audio`` (five inputs): feed-forward ``drop(relu(w(x)))``, output
  ``linear(drop(pooled))``; its ``src_embed`` (Embeddings) is stored but its
  forward never calls it;
- ``only_audio`` / ``only_video``: feed-forward ``w(drop(x + tanh(x)))``,
  output ``linear(drop(tanh(pooled)))``.

The authors fed raw features (no standardisation): ``standardize`` is None.
"""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from aanbench import __version__ as AANBENCH_VERSION
from aanbench.bundle import ModelBundle
from aanbench.contracts import TARGETS, AanbenchError
from aanbench.pluginkit.legacy_pickle import LegacyCheckpoint, Record, load_legacy
from aanbench.modelfile import FORMAT, save_model
from aanbench_plugins.models._feature_aan_net import FeatureAANNet
from aanbench_plugins.models.feature_aan import NET_KEYS

MODEL_NAME = "feature-aan"

#: Input order of each published variant (README of the authors' artefacts),
#: in aanbench's extractor names.
VARIANT_FEATURES: dict[str, tuple[str, ...]] = {
    "video_audio": ("resnet50", "flownets", "i3d", "vggish", "emobase2010"),
    "only_audio": ("vggish", "emobase2010"),
    "only_video": ("resnet50", "flownets", "i3d"),
}

#: Feature dimensions the authors' projections take.
FEATURE_DIMS: dict[str, int] = {
    "resnet50": 2048, "flownets": 1024, "i3d": 1024, "vggish": 128, "emobase2010": 1582,
}

# Forward passes of the encoder classes as the authors stored them (what our
# FeatureAANNet implements); compared as syntax trees, comments ignored.
_REFERENCE_FORWARDS: dict[str, dict[str, str]] = {
    "LayerNorm": {"": """
def forward(self, x):
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, keepdim=True)
    return self.a_2 * (x - mean) / (std + self.eps) + self.b_2
"""},
    "SublayerConnection": {"": """
def forward(self, x, sublayer):
    return x + self.dropout(sublayer(self.norm(x)))
"""},
    "EncoderLayer": {"": """
def forward(self, x, mask):
    x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, mask))
    return self.sublayer[1](x, self.feed_forward)
"""},
    "Encoder": {"": """
def forward(self, x, mask=None):
    for layer in self.layers:
        x = layer(x, mask)
    return self.norm(x)
"""},
    "MultiHeadedAttention": {"": """
def forward(self, query, key, value, mask=None):
    if mask is not None:
        mask = mask.unsqueeze(1)
    nbatches = query.size(0)
    query, key, value = \\
        [l(x).view(nbatches, -1, self.h, self.d_k).transpose(1, 2)
         for l, x in zip(self.linears, (query, key, value))]
    x, self.attn = attention(query, key, value, mask=mask, dropout=self.dropout)
    x = x.transpose(1, 2).contiguous().view(nbatches, -1, self.h * self.d_k)
    return self.linears[-1](x)
"""},
    "PositionwiseFeedForward": {
        "relu": """
def forward(self, x):
    return self.dropout(F.relu(self.w(x)))
""",
        "tanh_skip": """
def forward(self, x):
    return self.w(self.dropout(x + F.tanh(x)))
""",
    },
}

# Calls the top-level forward may make besides its own sub-modules (anything
# else is refused): concatenation, the pooling layer built in forward, tanh,
# and reshaping methods of local tensors.
_TOP_ALLOWED_FUNCS = {"torch.cat", "nn.AvgPool1d", "pooling", "F.tanh", "torch.tanh"}
_TOP_ALLOWED_METHODS = {"permute", "squeeze", "unsqueeze"}
_TANH = {"F.tanh", "torch.tanh"}


# --------------------------------------------------------------------------
# Reading the stored source as data


def _forward_def(source: str, cls_name: str, where: str) -> ast.FunctionDef:
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise AanbenchError(f"{where}: stored source of {cls_name} does not parse ({exc.msg})") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "forward":
                    return item
    raise AanbenchError(f"{where}: stored source of {cls_name} has no forward method")


def _fingerprint(fn: ast.FunctionDef) -> str:
    """The forward's signature and body as syntax trees (docstring, comments
    and layout ignored)."""
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]  # docstring
    parts = [ast.dump(fn.args, annotate_fields=False)]
    parts += [ast.dump(stmt, annotate_fields=False) for stmt in body]
    return "\n".join(parts)


def _reference_fingerprints() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for cls, variants in _REFERENCE_FORWARDS.items():
        out[cls] = {}
        for key, src in variants.items():
            fn = ast.parse(src).body[0]
            assert isinstance(fn, ast.FunctionDef)
            out[cls][key] = _fingerprint(fn)
    return out


_REF_FP = _reference_fingerprints()


def _check_forward(rec: Record, role: str, where: str) -> str:
    """Compare ``rec``'s stored forward with the supported one for ``role``;
    return the matching variant key."""
    if rec.source is None:
        raise AanbenchError(f"{where}: {rec.type_name} carries no source text; cannot tell its forward pass")
    fp = _fingerprint(_forward_def(rec.source, rec.class_name, where))
    for key, ref in _REF_FP[role].items():
        if fp == ref:
            return key
    raise AanbenchError(
        f"{where}: the stored forward of {rec.type_name} (role {role}) differs from every AttendAffectNet "
        "variant aanbench reproduces; refusing to convert it")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


class _TopForward:
    """What the top-level forward does, read from its syntax tree (never run).

    ``inputs``: forward's parameters in order; ``projection_of``: input name ->
    the sub-module applied to it; ``self_calls``: sub-modules it calls;
    ``head_tanh``: whether the output is ``self.linear(self.drop(tanh(...)))``
    rather than ``self.linear(self.drop(...))``; ``pool_from_shape``: whether
    it averages with ``nn.AvgPool1d(t.shape[-1])`` built in forward.
    """

    def __init__(self, rec: Record, where: str) -> None:
        if rec.source is None:
            raise AanbenchError(f"{where}: {rec.type_name} carries no source text")
        fn = _forward_def(rec.source, rec.class_name, where)
        if fn.args.vararg or fn.args.kwarg or fn.args.kwonlyargs:
            raise AanbenchError(f"{where}: unsupported forward signature of {rec.type_name}")
        self.inputs = [a.arg for a in fn.args.args[1:]]
        self.projection_of: dict[str, str] = {}
        self.self_calls: set[str] = set()
        self.self_refs: set[str] = set()
        self.pool_from_shape = False
        self.head_tanh: bool | None = None
        n_tanh = 0
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                self.self_refs.add(node.attr)
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            if name.startswith("self.") and name.count(".") == 1:
                sub = name[5:]
                self.self_calls.add(sub)
                if len(node.args) == 1 and isinstance(node.args[0], ast.Name) and node.args[0].id in self.inputs:
                    self.projection_of[node.args[0].id] = sub
                if sub == "linear":
                    self.head_tanh = self._head(node)
                continue
            if name in _TANH:
                n_tanh += 1
            elif name == "nn.AvgPool1d":
                arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
                self.pool_from_shape = (  # nn.AvgPool1d(t.shape[-1]): a window over all tokens
                    isinstance(arg, ast.Subscript) and isinstance(arg.value, ast.Attribute)
                    and arg.value.attr == "shape" and isinstance(arg.slice, ast.UnaryOp)
                    and isinstance(arg.slice.op, ast.USub) and isinstance(arg.slice.operand, ast.Constant)
                    and arg.slice.operand.value == 1)
            elif name in _TOP_ALLOWED_FUNCS:
                pass
            elif (isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
                  and node.func.value.id not in ("self", "torch", "F", "nn")
                  and node.func.attr in _TOP_ALLOWED_METHODS):
                pass
            else:
                raise AanbenchError(f"{where}: the stored forward of {rec.type_name} calls {name}(), "
                                    "which aanbench does not reproduce; refusing to convert it")
        if self.head_tanh is None:
            raise AanbenchError(f"{where}: the stored forward's output is not self.linear(self.drop(...))")
        if n_tanh != (1 if self.head_tanh else 0):
            raise AanbenchError(f"{where}: the stored forward applies tanh somewhere other than before "
                                "the output layer; aanbench does not reproduce that")

    @staticmethod
    def _head(call: ast.Call) -> bool | None:
        """``self.linear(self.drop(tanh(x)))`` -> True, ``self.linear(self.drop(x))``
        -> False, anything else -> None."""
        if len(call.args) != 1 or call.keywords:
            return None
        inner = call.args[0]
        if not (isinstance(inner, ast.Call) and _dotted(inner.func) == "self.drop" and len(inner.args) == 1):
            return None
        x = inner.args[0]
        return isinstance(x, ast.Call) and _dotted(x.func) in _TANH


# --------------------------------------------------------------------------
# Conversion


def _variant_from_name(name: str) -> str | None:
    for v in VARIANT_FEATURES:
        if re.search(rf"(^|[_\-.]){v}([_\-.]|$)", name):
            return v
    return None


def _target_from_name(name: str) -> str | None:
    found = [t for t in TARGETS if re.search(rf"(^|[_\-.]){t}([_\-.]|$)", name.lower())]
    return found[0] if len(found) == 1 else None


def _child(rec: Any, name: str, where: str) -> Record:
    if not isinstance(rec, Record) or name not in rec.modules or not isinstance(rec.modules[name], Record):
        owner = rec.type_name if isinstance(rec, Record) else type(rec).__name__
        raise AanbenchError(f"{where}: {owner} has no sub-module {name!r}; not a Feature AttendAffectNet model")
    return rec.modules[name]


def _tensor(rec: Record, name: str, where: str) -> torch.Tensor:
    t = rec.parameters.get(name)
    if not isinstance(t, torch.Tensor):
        raise AanbenchError(f"{where}: {rec.type_name} lacks parameter {name!r}")
    return t.detach().to(torch.float32).clone().contiguous()


def _linear(rec: Record, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if rec.class_name != "Linear":
        raise AanbenchError(f"{where}: expected a Linear layer, found {rec.type_name}")
    return _tensor(rec, "weight", where), _tensor(rec, "bias", where)


def _float_attr(rec: Record, name: str, where: str) -> float:
    v = rec.get(name)
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise AanbenchError(f"{where}: {rec.type_name}.{name} is missing or not a number")
    return float(v)


def _one(values: Sequence[Any], what: str, where: str) -> Any:
    if not values or any(v != values[0] for v in values):
        raise AanbenchError(f"{where}: {what} differs between layers ({sorted(set(values))}); "
                            "aanbench's Feature AAN uses one value")
    return values[0]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_to_payload(ck: LegacyCheckpoint, target: str | None = None) -> dict[str, Any]:
    """Build an aanbench model payload (see :mod:`aanbench.modelfile`) from a
    legacy Feature AttendAffectNet checkpoint read by
    :func:`aanbench.pluginkit.legacy_pickle.load_legacy`."""
    where = ck.path.name
    top = ck.obj
    if not isinstance(top, Record):
        raise AanbenchError(f"{where}: holds a {type(top).__name__}, not a pickled model")

    # -- target ---------------------------------------------------------------
    from_name = _target_from_name(where)
    if target is not None:
        if target not in TARGETS:
            raise AanbenchError(f"--target must be one of {', '.join(TARGETS)}, not {target!r}")
        if from_name is not None and from_name != target:
            raise AanbenchError(f"{where}: the file name says {from_name}, --target says {target}")
    target = target or from_name
    if target is None:
        raise AanbenchError(f"{where}: cannot tell the target from the file name; give --target arousal|valence")

    # -- top-level forward: inputs, projections, pooling, head ---------------
    fwd = _TopForward(top, where)
    if "src_embed" in fwd.self_refs:
        raise AanbenchError(f"{where}: the forward uses src_embed, which aanbench does not reproduce")
    missing = [i for i in fwd.inputs if i not in fwd.projection_of]
    if missing:
        raise AanbenchError(f"{where}: forward inputs {missing} do not go through a projection layer")
    proj_names = [fwd.projection_of[i] for i in fwd.inputs]
    if len(set(proj_names)) != len(proj_names):
        raise AanbenchError(f"{where}: two inputs share one projection layer")
    for needed in ("encoder", "linear", "drop"):
        if needed not in fwd.self_calls:
            raise AanbenchError(f"{where}: the stored forward never calls self.{needed}; not a Feature AAN model")
    unknown = fwd.self_calls - set(proj_names) - {"encoder", "pooling", "linear", "drop"}
    if unknown:
        raise AanbenchError(f"{where}: the stored forward calls {sorted(unknown)}, which aanbench does not reproduce")
    projections = [_linear(_child(top, n, where), f"{where}: {n}") for n in proj_names]
    dims = [int(w.shape[1]) for w, _ in projections]
    d_model = int(projections[0][0].shape[0])
    if any(int(w.shape[0]) != d_model for w, _ in projections):
        raise AanbenchError(f"{where}: projections disagree on d_model")

    variant = _variant_from_name(where)
    if variant is None:
        matches = [v for v, feats in VARIANT_FEATURES.items() if [FEATURE_DIMS[f] for f in feats] == dims]
        if len(matches) != 1:
            raise AanbenchError(f"{where}: cannot tell the input set from the file name or the input sizes {dims}")
        variant = matches[0]
    features = list(VARIANT_FEATURES[variant])
    expected = [FEATURE_DIMS[f] for f in features]
    if dims != expected:
        raise AanbenchError(f"{where}: the {variant} variant takes inputs of sizes {expected} "
                            f"({', '.join(features)}), the checkpoint's projections take {dims}")

    n_tokens = len(features)
    if "pooling" in fwd.self_calls:
        pool = _child(top, "pooling", where)
        ks, stride, pad = pool.get("kernel_size"), pool.get("stride"), pool.get("padding")
        if (pool.class_name != "AvgPool1d" or ks != (n_tokens,) or stride != (n_tokens,)
                or pad not in ((0,), 0)):
            raise AanbenchError(f"{where}: pooling {pool.type_name}{ks} does not average all {n_tokens} tokens")
    elif not fwd.pool_from_shape:
        raise AanbenchError(f"{where}: the stored forward does not average the tokens as aanbench does")
    head_w, head_b = _linear(_child(top, "linear", where), f"{where}: linear")
    if tuple(head_w.shape) != (1, d_model):
        raise AanbenchError(f"{where}: the output layer is not {d_model} -> 1")
    head_dropout = _float_attr(_child(top, "drop", where), "p", where)
    head_activation = "tanh" if fwd.head_tanh else "none"

    # -- encoder ----------------------------------------------------------------
    encoder = _child(top, "encoder", where)
    _check_forward(encoder, "Encoder", where)
    layer_recs = [r for r in _child(encoder, "layers", where).modules.values()]
    if not layer_recs or not all(isinstance(r, Record) for r in layer_recs):
        raise AanbenchError(f"{where}: the encoder holds no layers")
    final_norm = _child(encoder, "norm", where)
    _check_forward(final_norm, "LayerNorm", where)
    eps_values = [_float_attr(final_norm, "eps", where)]
    heads_values, drop_values, ff_kinds = [], [], []
    state: dict[str, torch.Tensor] = {}
    for i, (w, b) in enumerate(projections):
        state[f"projections.{i}.weight"], state[f"projections.{i}.bias"] = w, b
    for n, layer in enumerate(layer_recs):
        lw = f"{where}: encoder layer {n}"
        _check_forward(layer, "EncoderLayer", lw)
        attn = _child(layer, "self_attn", lw)
        _check_forward(attn, "MultiHeadedAttention", lw)
        h, d_k = attn.get("h"), attn.get("d_k")
        if not isinstance(h, int) or not isinstance(d_k, int) or h * d_k != d_model:
            raise AanbenchError(f"{lw}: heads {h!r} x d_k {d_k!r} != d_model {d_model}")
        heads_values.append(h)
        linears = list(_child(attn, "linears", lw).modules.values())
        if len(linears) != 4:
            raise AanbenchError(f"{lw}: attention has {len(linears)} linears, 4 expected (q, k, v, out)")
        for name, lin in zip(("q", "k", "v", "out"), linears):
            state[f"layers.{n}.attn.{name}.weight"], state[f"layers.{n}.attn.{name}.bias"] = _linear(lin, lw)
        drop_values.append(_float_attr(_child(attn, "dropout", lw), "p", lw))
        ff = _child(layer, "feed_forward", lw)
        ff_kinds.append(_check_forward(ff, "PositionwiseFeedForward", lw))
        state[f"layers.{n}.ff.weight"], state[f"layers.{n}.ff.bias"] = _linear(_child(ff, "w", lw), lw)
        drop_values.append(_float_attr(_child(ff, "dropout", lw), "p", lw))
        subs = list(_child(layer, "sublayer", lw).modules.values())
        if len(subs) != 2:
            raise AanbenchError(f"{lw}: {len(subs)} sublayer connections, 2 expected")
        for k, sub in enumerate(subs, start=1):
            _check_forward(sub, "SublayerConnection", lw)
            norm = _child(sub, "norm", lw)
            _check_forward(norm, "LayerNorm", lw)
            eps_values.append(_float_attr(norm, "eps", lw))
            state[f"layers.{n}.norm{k}.weight"] = _tensor(norm, "a_2", lw)
            state[f"layers.{n}.norm{k}.bias"] = _tensor(norm, "b_2", lw)
            drop_values.append(_float_attr(_child(sub, "dropout", lw), "p", lw))
    state["norm.weight"] = _tensor(final_norm, "a_2", where)
    state["norm.bias"] = _tensor(final_norm, "b_2", where)
    state["head.weight"], state["head.bias"] = head_w, head_b

    config = {
        "d_model": d_model,
        "heads": int(_one(heads_values, "number of heads", where)),
        "layers": len(layer_recs),
        "dropout": float(_one(drop_values, "dropout", where)),
        "head_dropout": head_dropout,
        "eps": float(_one(eps_values, "LayerNorm epsilon", where)),
        "head_activation": head_activation,
        "feed_forward": _one(ff_kinds, "feed-forward block", where),
    }
    assert set(config) == set(NET_KEYS), "FeatureAANNet options changed; update the converter"

    # Validate by loading into our network (shapes and names, strictly).
    net = FeatureAANNet(dims, **config)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise AanbenchError(f"{where}: weights do not fit Feature AAN: {str(exc).splitlines()[0]}") from None

    return {
        "format": FORMAT,
        "model": MODEL_NAME,
        "target": target,
        "features": features,
        "standardize": None,
        "state": {"config": {"dims": dims, **config},
                  "state_dict": {k: v.clone() for k, v in net.state_dict().items()}},
        "provenance": {
            "source_file": where,
            "source_sha256": _sha256(ck.path),
            "source_format": "legacy torch.save (pre-1.6) of a whole module",
            "source_class": top.type_name,
            "variant": variant,
            "class_source_sha256": {t: hashlib.sha256(s.encode("utf-8")).hexdigest()
                                    for t, s in sorted(ck.sources.items())},
            "converted_by": f"aanbench {AANBENCH_VERSION} models import-aan",
            "torch_version": str(torch.__version__),
        },
    }


def convert_checkpoint(path: str | Path, out: str | Path, target: str | None = None) -> Path:
    """Convert the legacy checkpoint ``path`` into the aanbench model file ``out``.

    ``target`` (``arousal``/``valence``) is needed only when the file name does
    not say it. Raises :class:`AanbenchError` for anything that is not a
    Feature AttendAffectNet legacy checkpoint aanbench can reproduce.
    """
    ck = load_legacy(path)
    payload = checkpoint_to_payload(ck, target)
    return save_model(out, ModelBundle.from_payload(payload, str(out)))


def build_net(payload: Mapping[str, Any]) -> FeatureAANNet:
    """Rebuild the network of a ``feature-aan`` model payload, weights loaded,
    in evaluation mode. ``payload["state"]`` is ``{"config": {"dims": [int],
    <FeatureAANNet options: NET_KEYS>}, "state_dict": {name: Tensor}}`` (the
    layout ``feature_aan``'s ``Model.state()`` writes)."""
    config = dict(payload["state"]["config"])
    dims = [int(d) for d in config.pop("dims")]
    unknown = set(config) - set(NET_KEYS)
    if unknown:
        raise AanbenchError(f"model file has options {sorted(unknown)} this aanbench's Feature AAN lacks")
    net = FeatureAANNet(dims, **config)
    net.load_state_dict(payload["state"]["state_dict"], strict=True)
    net.eval()
    return net


def predict_arrays(payload: Mapping[str, Any], arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Apply a model payload to features given as ``(n, dim_k)`` arrays in
    ``payload["features"]`` order; returns ``float32 (n,)``."""
    if len(arrays) != len(payload["features"]):
        raise AanbenchError(f"model takes {len(payload['features'])} feature arrays, got {len(arrays)}")
    net = build_net(payload)
    xs = [torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in arrays]
    with torch.no_grad():
        return net(*xs).numpy().astype(np.float32)
