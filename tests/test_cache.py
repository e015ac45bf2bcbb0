"""The decode-once cache: right pixels, reused across runs, one build when two jobs race."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import yaml

from tasks.data.cache import decode, ensure_cache
from tasks.data.dataset import index_train
from tasks.data.preparation import prepare
from tests.helpers.specs import shrunk_spec


def train_files(root: Path, n: int = 40):
    images = index_train(root).images.head(n)
    return list(images["image_key"]), list(images["path"])


def test_cache_holds_the_decoded_images(synth_root, tmp_path):
    keys, paths = train_files(synth_root)
    cache = ensure_cache(synth_root, keys, paths, (32, 24), tmp_path)
    array = cache.open()
    assert array.shape == (len(keys), 32, 24, 3) and array.dtype == np.uint8
    assert isinstance(array, np.memmap)
    for i in (0, 7, len(keys) - 1):
        assert np.array_equal(array[i], decode(synth_root / paths[i], (32, 24)))
    assert cache.rows([keys[5], keys[2]]).tolist() == [5, 2]
    assert cache.ok.all() and cache.problems == ()


def test_reused_until_files_or_size_change(data_copy, tmp_path, capsys):
    keys, paths = train_files(data_copy)
    first = ensure_cache(data_copy, keys, paths, (32, 24), tmp_path)
    assert "[cache]" in capsys.readouterr().err
    again = ensure_cache(data_copy, keys, paths, (32, 24), tmp_path)
    assert again.array_path == first.array_path and "[cache]" not in capsys.readouterr().err
    assert ensure_cache(data_copy, keys, paths, (16, 12), tmp_path).array_path != first.array_path
    target = data_copy / paths[3]
    target.write_bytes(target.read_bytes() + b"\0")  # a changed file is a different data set
    assert ensure_cache(data_copy, keys, paths, (32, 24), tmp_path).array_path != first.array_path


def test_two_processes_build_once(synth_root, tmp_path):
    keys, paths = train_files(synth_root, 120)
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from tasks.data.cache import ensure_cache
        keys, paths = json.loads(sys.argv[1])
        cache = ensure_cache(Path({str(synth_root)!r}), keys, paths, (64, 48), Path({str(tmp_path)!r}), workers=1)
        print(cache.open()[:, ::7, ::7].sum())
    """)
    arg = json.dumps([keys, paths])
    procs = [subprocess.Popen([sys.executable, "-c", script, arg], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=Path(__file__).parent.parent) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    builders = [err for _, err in outs if "[cache]" in err]
    assert len(builders) == 1  # the other waited on the lock and read the finished cache
    assert outs[0][0] == outs[1][0]


def test_prepare_writes_folds_spec_and_manifest(synth_root, tmp_path):
    spec = shrunk_spec(synth_root, tmp_path, "data.cache_size=[32, 24]", name="prep")
    dataset = prepare(spec, verbose=False)
    out = tmp_path / "prep"
    saved = yaml.safe_load((out / "spec.yaml").read_text())
    assert saved["data"]["root"] == str(synth_root) and saved["name"] == "prep"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec_hash"] == spec.spec_hash() and manifest["data_hash"] == dataset.data_hash
    assert manifest["packages"]["torch"].startswith("2.") and manifest["git"]
    import pandas as pd
    folds = pd.read_parquet(out / "folds.parquet")
    assert set(folds["image_key"]) == set(dataset.train["image_key"])
    assert folds["fold"].nunique() == spec.folds.n_splits


def test_cache_records_each_files_sha256(data_copy, tmp_path):
    import hashlib

    keys, paths = train_files(data_copy, 10)
    (data_copy / paths[4]).unlink()
    cache = ensure_cache(data_copy, keys, paths, (32, 24), tmp_path)
    assert cache.sha256[4] == "" and not cache.ok[4]
    for i in (0, 3, 9):
        assert cache.sha256[i] == hashlib.sha256((data_copy / paths[i]).read_bytes()).hexdigest()
    # read back from the metadata, not recomputed
    assert ensure_cache(data_copy, keys, paths, (32, 24), tmp_path).sha256 == cache.sha256
