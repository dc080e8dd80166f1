"""The VAR decode step (one scale against the static KV cache) captures as one graph with torch.compile.

``backend="eager"`` runs dynamo's full-graph capture without generating code, so the test
checks "no graph breaks, no host syncs that dynamo must fall back on" in a second, not a
minute of inductor compilation; inductor on GPU compiles the same graph.
"""

import torch
from helpers import tiny_msvq, tiny_var


def test_var_scale_step_compiles_fullgraph_and_matches_eager():
    model, tok = tiny_var(), tiny_msvq()
    c = model.config
    torch._dynamo.reset()
    step = torch.compile(model.trunk, fullgraph=True, backend="eager", dynamic=False)
    labels = torch.tensor([0, 2])
    cond = model.cond_embed(labels)
    idx = tok.encode_scales(torch.rand(2, 1, 8, 8) * 2 - 1)
    inputs = tok.teacher_forcing_input(idx)  # (B, L-1, Cv)
    caches_c, caches_e = model.new_caches(2), model.new_caches(2)
    with torch.no_grad():
        for si in range(len(c.scales)):
            start, end = c.begin_ends[si]
            x = model.first_input(cond) if si == 0 else model.embed_input(inputs[:, start - 1:end - 1], si)
            got = step(x, cond, start, caches_c)
            want = model.trunk(x, cond, start, caches_e)
            assert torch.allclose(got, want, atol=1e-6), f"scale {si}"
