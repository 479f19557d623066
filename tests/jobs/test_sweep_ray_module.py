"""A sweep item judged with the user's module (`module: package.module:factory`) on a Ray worker.

Its own embedded Ray: Ray uploads local folders only in ray.init's runtime_env, so the sweep
starts Ray with the module (test_sweep_ray.py's shared Ray was started without it). Where the
module is found is tested in the fast tier (test_sweep_spec.py).
"""
from __future__ import annotations

import dataclasses

import pytest

from zoocodec.jobs import results as res, run as runner, spec as sweep_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # about 25 s: its own Ray, a worker with the module


def test_a_state_dict_with_its_module_is_judged_on_a_worker(ray_api, tmp_path):
    """The user's package sits beside the spec, on neither the driver's nor the workers' path; the
    sweep ships it to the workers (Ray py_modules), and the item's row holds the fidelity metrics
    with their intervals. Without shipping, the item cannot import it."""
    import numpy as np
    import torch

    from support import DIGITS_MLP

    torch.manual_seed(0)  # the fidelity of any weights of this net; no need to train it here
    scope: dict = {}
    exec(DIGITS_MLP, scope)
    net = scope["make"]()
    x = np.random.default_rng(0).random((200, 1, 8, 8), dtype=np.float32)
    (tmp_path / "usernets").mkdir()
    (tmp_path / "usernets" / "__init__.py").write_text("")
    (tmp_path / "usernets" / "digits.py").write_text(DIGITS_MLP)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "s.yaml").write_text("name: mod\nmodels:\n  - model: net.pt\n    inputs: x.npy\n"
                                     "    module: usernets.digits:make\nmethods: ['uniform:bits=3']\nmin_size: 1024\n")
    sweep = sweep_spec.load(tmp_path / "s.yaml", tmp_path / "out")
    [item] = sweep.items
    assert item.judged_on.module_source == str((tmp_path / "usernets").resolve())
    unshipped = dataclasses.replace(item, judged_on=dataclasses.replace(item.judged_on, module_source=None))
    row, _ = runner.execute(unshipped, "mod")  # here, in the driver: the package is not on its path
    assert row["status"] == "failed" and "cannot import usernets" in row["error"]

    outcome = runner.run(sweep, num_cpus=2)
    assert (outcome.ok, outcome.failed) == (1, 0) and outcome.where.startswith("embedded Ray")
    [row] = res.Results(sweep.out).runs().to_pylist()
    assert row["status"] == "ok", row["error"]
    assert "/" in row["node"]  # ran on a Ray worker (host/node id)
    m = {r["metric"]: r for r in row["metrics"]}
    assert set(m) == {"kl", "agreement"} and m["kl"]["primary"] and m["kl"]["inputs"] == len(x)
    assert 0 < m["kl"]["drop_low_pct"] <= m["kl"]["drop_pct"] <= m["kl"]["drop_high_pct"]
    assert m["agreement"]["drop_low_pct"] <= m["agreement"]["drop_pct"] <= m["agreement"]["drop_high_pct"]
    assert row["worst_drop_high_pct"] == m["kl"]["drop_high_pct"] and row["inputs"] == len(x)
