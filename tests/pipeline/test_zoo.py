"""Zoo names: a name means the zoo model; a local file of that name is used only when written as a path."""
import json

from safetensors.torch import save_file

from conftest import laplace_model
from support import run_script
from zoocodec.jobs import run as runner, spec as sweep_spec
from zoocodec.pipeline import zoo
from zoocodec.pipeline.core import load


def _shadow(tmp_path, mnist_path):
    """A different model saved as ./mnist-cnn, beside the zoo's mnist-cnn."""
    save_file(laplace_model(), tmp_path / "mnist-cnn")
    return tmp_path / "mnist-cnn"


def test_a_zoo_name_means_the_zoo_model_and_says_so(tmp_path, mnist_path, monkeypatch):
    local = _shadow(tmp_path, mnist_path)
    monkeypatch.chdir(tmp_path)
    assert zoo.locate("mnist-cnn") == mnist_path
    note = zoo.shadowed("mnist-cnn")
    assert "using the zoo model" in note and "./mnist-cnn" in note
    assert zoo.shadowed("./mnist-cnn") is None and zoo.shadowed("fmnist-cnn") is None
    assert zoo.locate("./mnist-cnn").resolve() == local.resolve()
    assert "conv.weight" in load("./mnist-cnn").names and "conv.weight" not in load("mnist-cnn").names


def test_cli_uses_the_zoo_model_when_a_local_copy_shadows_its_name(tmp_path, mnist_path):
    _shadow(tmp_path, mnist_path)
    out = run_script("compress", "mnist-cnn", "-o", "z.zc", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["params"] == 390410
    assert out.stderr.startswith("note: mnist-cnn: using the zoo model")
    local = run_script("compress", "./mnist-cnn", "-o", "l.zc", "--json", cwd=tmp_path)
    assert local.returncode == 0 and json.loads(local.stdout)["params"] != 390410 and "note:" not in local.stderr


def test_a_sweep_reads_what_its_work_id_hashes(tmp_path, mnist_path, monkeypatch):
    """Run from a folder holding a file named like the zoo model: the row is the zoo model's,
    its recorded content hash is the one the work id was made from."""
    _shadow(tmp_path, mnist_path)
    (tmp_path / "s.yaml").write_text("models: [mnist-cnn, ./mnist-cnn]\nmethods: ['uniform:bits=8']\n")
    monkeypatch.chdir(tmp_path)
    zoo_item, local_item = sweep_spec.load(tmp_path / "s.yaml").items
    assert zoo_item.content == sweep_spec.content_hash(mnist_path) != local_item.content
    row, _ = runner.execute(zoo_item, "s")
    assert row["status"] == "ok" and row["weights"] == 390410 and row["model_sha256"] == zoo_item.content
    assert 4.0 < row["ratio"] < 4.6
    row, _ = runner.execute(local_item, "s")
    assert row["status"] == "ok" and row["model_sha256"] == local_item.content


def test_a_model_that_changed_after_planning_is_not_recorded_under_the_old_id(tmp_path, mnist_path):
    local = _shadow(tmp_path, mnist_path)
    (tmp_path / "s.yaml").write_text("models: [./mnist-cnn]\nmethods: ['uniform:bits=8']\n")
    item = sweep_spec.load(tmp_path / "s.yaml").items[0]
    save_file(laplace_model(seed=1), local)
    row, _ = runner.execute(item, "s")
    assert row["status"] == "failed" and "not the one the sweep was planned on" in row["error"]


def test_a_split_zip_is_extracted_once_under_a_lock(tmp_path):
    """Concurrent first uses of a split-zip model wait for one extraction instead of each doing it."""
    import io
    import subprocess
    import sys
    import time
    import zipfile

    from filelock import FileLock

    from support import script_env

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model/config.json", "{}")
        z.writestr("model/weights.bin", b"w" * 5000)
    data = buf.getvalue()
    for i, chunk in enumerate((data[:2000], data[2000:])):
        pkg = tmp_path / "site" / f"zcpart{i}"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / f"m.zip.{i:03d}").write_bytes(chunk)
    (tmp_path / "zoo.yaml").write_text("splitty:\n  packages: [zcpart0, zcpart1]\n  parts: m.zip.*\n  file: model\n"
                                       "  install: pip install zcpart\n")
    env = script_env(ZOOCODEC_ZOO=str(tmp_path / "zoo.yaml"), ZOOCODEC_CACHE=str(tmp_path / "cache"))
    env["PYTHONPATH"] += f":{tmp_path / 'site'}"
    code = "from zoocodec.pipeline import zoo; print(zoo.resolve('splitty'))"
    (tmp_path / "cache").mkdir()
    with FileLock(tmp_path / "cache" / ".splitty.lock"):  # another process is extracting
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(3)
        assert proc.poll() is None and not (tmp_path / "cache" / "splitty").exists()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == str(tmp_path / "cache" / "splitty" / "model")
    assert (tmp_path / "cache" / "splitty" / "model" / "weights.bin").read_bytes() == b"w" * 5000
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".splitty.lock", "splitty"]
