"""Topological order of a graph's nodes, the graph's own order breaking ties (standard library only).

For whom: ``converters.shared.parity`` (the ops of a ``tf.Graph``, for the first-divergent-node search)
and ``legacy_tf1.graph_inference`` (the nodes of a GraphDef). Both give names and their inputs; Kahn's algorithm
with a heap keyed by the original position keeps the order stable and reproducible.
"""

import heapq


def topological(names, inputs_of):
    """``names`` (in the graph's order) sorted so that every input comes before its users.

    ``inputs_of(name)``: the names ``name`` reads (inputs and control inputs); names outside ``names`` are
    ignored. Nodes on a cycle (TF 1.x loops: NextIteration) keep their written order, after the rest.
    """
    index = dict((name, k) for k, name in enumerate(names))
    pending = dict((name, set(source for source in inputs_of(name) if source in index)) for name in names)
    users = {}
    for name, sources in pending.items():
        for source in sources:
            users.setdefault(source, []).append(name)
    ready = [(index[name], name) for name, sources in pending.items() if not sources]
    heapq.heapify(ready)
    order = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for user in users.get(name, []):
            pending[user].discard(name)
            if not pending[user]:
                heapq.heappush(ready, (index[user], user))
    placed = set(order)
    return order + [name for name in names if name not in placed]
