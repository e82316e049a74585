"""Is a stored Keras functional config a graph Keras can rebuild? Checked before Keras sees it.

For whom: the loaders that hand a stored config to Keras (``legacy_tf1.loading``). Keras 2.2/2.3 rebuild a
functional model by retrying, in a loop, every layer whose inbound layers are not built yet: a layer whose
``inbound_nodes`` name a layer the config does not have, or layers that feed each other in a cycle, make
that loop endless (a damaged or hand-edited file hangs the step), and so does an inbound node that names
no layer at all. ``check`` refuses such a config in one
paragraph instead. Standard library only, Python 3.7 compatible; it never imports Keras.
"""

from converters.errors import ModelLoadError


def _functional_configs(config, path=""):
    """(where, config) of every functional model config (one with ``layers`` holding ``inbound_nodes``)."""
    if isinstance(config, dict):
        inner = config.get("config")
        if isinstance(inner, dict) and isinstance(inner.get("layers"), list) and any(
                isinstance(layer, dict) and "inbound_nodes" in layer for layer in inner["layers"]):
            yield path or inner.get("name") or "the model", inner
        for key, value in config.items():
            for found in _functional_configs(value, path):
                yield found
    elif isinstance(config, list):
        for value in config:
            for found in _functional_configs(value, path):
                yield found


def _inbound_names(nodes):
    """Layer names an ``inbound_nodes`` value refers to (Keras 2: [[[name, node, tensor, kwargs], ...], ...])."""
    names = []
    if not isinstance(nodes, list):
        return names
    for node in nodes:
        for entry in node if isinstance(node, list) else []:
            if isinstance(entry, list) and entry and isinstance(entry[0], str):
                names.append(entry[0])
    return names


def problems(config):
    """Sentences naming what makes ``config`` (a parsed stored model config) impossible to rebuild."""
    found = []
    for where, model in _functional_configs(config):
        layers = [layer for layer in model["layers"] if isinstance(layer, dict)]
        names = [layer.get("name") or (layer.get("config") or {}).get("name") for layer in layers]
        known = set(name for name in names if isinstance(name, str))
        needs = {}
        for name, layer in zip(names, layers):
            nodes = layer.get("inbound_nodes")
            if isinstance(nodes, list) and any(not isinstance(node, list) or not node or not all(
                    isinstance(entry, list) and entry and isinstance(entry[0], str) for entry in node)
                    for node in nodes):
                # an empty or malformed node is never called: Keras 2 waits for it forever
                found.append("in %s, layer %r has an inbound node that names no input layer" % (where, name))
            inbound = _inbound_names(nodes)
            missing = sorted(set(inbound) - known)
            if missing:
                found.append("in %s, layer %r takes its input from %s, which the config does not have"
                             % (where, name, ", ".join(repr(m) for m in missing)))
            needs[name] = set(inbound) & known
        for key in ("input_layers", "output_layers"):
            for entry in model.get(key) or []:
                if isinstance(entry, list) and entry and isinstance(entry[0], str) and entry[0] not in known:
                    found.append("in %s, %s names %r, which the config does not have" % (where, key, entry[0]))
        built = set()
        while True:  # Kahn's order: what is never built sits on a cycle (or after one)
            ready = [name for name, wanted in needs.items() if name not in built and wanted <= built]
            if not ready:
                break
            built.update(ready)
        stuck = sorted(str(name) for name in needs if name not in built)
        if stuck and not any("takes its input from" in sentence for sentence in found):
            found.append("in %s, layers %s feed each other in a cycle" % (where, ", ".join(stuck[:5])))
    return found


def check(config, where, step="load"):
    """Raise ``ModelLoadError`` (one paragraph) when ``config`` cannot be rebuilt (``problems``)."""
    found = problems(config)
    if found:
        raise ModelLoadError(
            "the model config of %s is not a graph Keras can rebuild: %s." % (where, "; ".join(found[:3])),
            step=step, hint="The file is damaged or was edited by hand; save the model again from its code.")
