"""Load every function of a serialized Beam pipeline, as a remote runner's workers would.

    python tests/graph_loader.py PIPELINE.pb

Run by `tests/test_dataflow_ready.py` in a fresh virtual environment holding only apache-beam
and the sdist Beam staged, so it imports nothing of this repository itself (standard library
and Beam only). It reads the pipeline proto (`Pipeline.SerializeToString()`), unpickles each
pickled payload — DoFns, CombineFns, side-input view and window-mapping functions, window
functions, coders — with Beam's own `pickler.loads` (coders through `deserialize_coder`, which
strips the class name before it), and prints a JSON summary on stdout:
`{"loaded": {kind: count}, "classes": [module.qualname, ...], "modules": {module: file}}`.
A payload that does not load raises, with the transform it belongs to.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

from apache_beam.coders.coders import deserialize_coder
from apache_beam.internal import pickler
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2

_PICKLED = {
    python_urns.PICKLED_DOFN_INFO: "dofn",
    python_urns.PICKLED_DOFN: "dofn",
    python_urns.PICKLED_COMBINE_FN: "combine_fn",
    python_urns.PICKLED_VIEWFN: "view_fn",
    python_urns.PICKLED_WINDOW_MAPPING_FN: "window_mapping_fn",
    python_urns.PICKLED_WINDOWFN: "window_fn",
    python_urns.PICKLED_CODER: "coder",
    python_urns.PICKLED_SOURCE: "source",
    python_urns.PICKLED_TRANSFORM: "transform",
}
_COMBINES = {
    common_urns.composites.COMBINE_PER_KEY.urn,
    common_urns.composites.COMBINE_GLOBALLY.urn,
    common_urns.combine_components.COMBINE_PER_KEY_PRECOMBINE.urn,
    common_urns.combine_components.COMBINE_PER_KEY_MERGE_ACCUMULATORS.urn,
    common_urns.combine_components.COMBINE_PER_KEY_EXTRACT_OUTPUTS.urn,
    common_urns.combine_components.COMBINE_GROUPED_VALUES.urn,
}


def function_specs(pipeline: beam_runner_api_pb2.Pipeline) -> list[tuple[str, Any]]:
    """(where, FunctionSpec) of every function the pipeline's transforms, windowing and coders hold."""
    specs = []
    for transform in pipeline.components.transforms.values():
        where, urn = transform.unique_name, transform.spec.urn
        if urn == common_urns.primitives.PAR_DO.urn:
            pardo = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
            specs.append((where, pardo.do_fn))
            for side in pardo.side_inputs.values():
                specs += [(where, side.view_fn), (where, side.window_mapping_fn)]
        elif urn in _COMBINES:
            combine = beam_runner_api_pb2.CombinePayload.FromString(transform.spec.payload)
            specs.append((where, combine.combine_fn))
        elif urn == common_urns.primitives.ASSIGN_WINDOWS.urn:
            window_into = beam_runner_api_pb2.WindowIntoPayload.FromString(transform.spec.payload)
            specs.append((where, window_into.window_fn))
    for name, strategy in pipeline.components.windowing_strategies.items():
        specs.append((f"windowing strategy {name}", strategy.window_fn))
    for name, coder in pipeline.components.coders.items():
        specs.append((f"coder {name}", coder.spec))
    return specs


def load_all(pipeline: beam_runner_api_pb2.Pipeline) -> dict[str, Any]:
    loaded: Counter[str] = Counter()
    classes: set[str] = set()
    for where, spec in function_specs(pipeline):
        kind = _PICKLED.get(spec.urn)
        if kind is None:
            continue
        try:
            value = deserialize_coder(spec.payload) if kind == "coder" else pickler.loads(spec.payload)
        except Exception as error:
            raise RuntimeError(
                f"{kind} of {where!r} does not load: {type(error).__name__}: {error}"
            ) from error
        loaded[kind] += 1
        for part in value if isinstance(value, tuple) else (value,):
            kind_of = type(part)
            classes.add(f"{kind_of.__module__}.{kind_of.__qualname__}")
    modules = {
        name: getattr(module, "__file__", None)
        for name, module in sorted(sys.modules.items())
        if name.split(".")[0] in ("pipelines", "transforms", "connectors")
    }
    return {"loaded": dict(loaded), "classes": sorted(classes), "modules": modules}


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as serialized:
        proto = beam_runner_api_pb2.Pipeline.FromString(serialized.read())
    print(json.dumps(load_all(proto)))
