"""LinearProbeCLIP: lpclip's file format, its draws and its C search on features with a known answer, and the
trainer end to end through train.py on the tiny random backbone (feature cache reused and invalidated,
resume, transfer to a class subset, the refusal of unseen classes, predict through the API)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import train
from dassl.config import ConfigError
from dassl.engine import build_trainer
from dassl.utils import set_random_seed
from scripts import compare_lpclip
from trainers.linear_probe import (LPCLIP_C_GRID, Classifier, LinearProbeCLIP, read_lpclip_features,
                                   sample_per_class, search_c, validation_shots, write_lpclip_features)
from trainers_testutils import REPO, TINY
from dassl.utils.errors import InputError


def blobs(n_classes=4, per_class=12, dim=6, spread=0.3, seed=0):
    """Gaussian clusters around well separated centres: a problem every reasonable C solves exactly."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 4
    labels = np.repeat(np.arange(n_classes), per_class)
    return centres[labels] + rng.normal(scale=spread, size=(len(labels), dim)), labels


# ---------------------------------------------------------------------------------------------- file format


def test_lpclip_feature_files_are_written_and_read_in_its_format(tmp_path):
    features, labels = blobs()
    path = str(tmp_path / "Demo" / "train.npz")
    write_lpclip_features(path, features.astype(np.float32), labels)
    with np.load(path) as data:  # what lpclip's linear_probe.py reads
        assert sorted(data.files) == ["feature_list", "label_list"]
        assert data["feature_list"].dtype == np.float64 and data["label_list"].dtype == np.int64
        assert np.array_equal(data["feature_list"], features.astype(np.float32).astype(np.float64))
    # a file as lpclip's feat_extractor.py writes it: np.savez of Python lists
    official = str(tmp_path / "official.npz")
    np.savez(official, feature_list=features.tolist(), label_list=labels.tolist())
    read_features, read_labels = read_lpclip_features(official)
    assert np.array_equal(read_features, features) and np.array_equal(read_labels, labels)
    np.savez(str(tmp_path / "other.npz"), features=features)
    with pytest.raises(InputError, match="not an lpclip feature file"):
        read_lpclip_features(str(tmp_path / "other.npz"))


# ---------------------------------------------------------------------------------------------- sampling


def test_draws_are_lpclip_s_global_numpy_stream_without_touching_it():
    labels = np.repeat(np.arange(5), 7)[np.random.default_rng(1).permutation(35)]
    state_before = np.random.get_state()[1].copy()
    ours = sample_per_class(labels, 3, np.random.RandomState(2), "train")
    assert (np.random.get_state()[1] == state_before).all()
    np.random.seed(2)  # lpclip: np.random.seed(seed), then per label np.random.choice(..., replace=False)
    expected = [i for label in np.unique(labels)
                for i in np.random.choice(np.where(labels == label)[0], size=3, replace=False)]
    assert ours.tolist() == expected
    assert [validation_shots(k) for k in (1, 2, 4, 8, 16)] == [1, 2, 4, 4, 4]  # lpclip's val_shot_list
    with pytest.raises(InputError, match="SAMPLING fewshot"):
        sample_per_class(labels, 8, np.random.RandomState(0), "train")


# ---------------------------------------------------------------------------------------------- the C search


class Stub:
    """A fitted model whose validation predictions are right for a fraction of the images that depends on C only."""

    def __init__(self, c, accuracy_of):
        self.c, self.accuracy_of = c, accuracy_of

    def predict(self, features):
        right = int(round(self.accuracy_of(self.c) * len(features)))
        return np.where(np.arange(len(features)) < right, 0, 1)


def stub_search(accuracy_of, steps=8, grid=LPCLIP_C_GRID, monkeypatch=None):
    monkeypatch.setattr("trainers.linear_probe.fit_logistic", lambda x, y, c, max_iter: (Stub(c, accuracy_of), True))
    monkeypatch.setattr(Classifier, "from_sklearn", classmethod(lambda cls, model: model))
    val = (np.zeros((100, 2)), np.zeros(100, dtype=int))
    return search_c((None, None), val, grid, steps, 1000, log=lambda line: None)


def lpclip_sequence(best, accuracy_of, steps):
    """lpclip's rounds, by its own rules: fit C/10 and 10 C, keep the better (left on ties), halve in log10."""
    left, right, fitted = 1e-1 * best, 1e1 * best, []
    for _ in range(steps):
        fitted += [left, right]
        if accuracy_of(left) < accuracy_of(right):
            left, right, kept = 10 ** (0.5 * (np.log10(right) + np.log10(left))), right, right
        else:
            left, right, kept = left, 10 ** (0.5 * (np.log10(right) + np.log10(left))), left
    return fitted, kept


def test_the_search_keeps_the_validation_best_c(monkeypatch):
    # Validation accuracy peaks at C = 3 (0.9), falling with the distance in log10 C.
    accuracy_of = lambda c: round(0.9 - 0.2 * abs(np.log10(c) - np.log10(3.0)), 2)  # noqa: E731
    result = stub_search(accuracy_of, monkeypatch=monkeypatch)
    fitted = [c for c, _ in result.trace]
    assert fitted[:7] == list(LPCLIP_C_GRID)
    assert max(LPCLIP_C_GRID, key=accuracy_of) == 1.0  # the grid's best is C = 1, so the rounds bisect [0.1, 10]
    expected_fits, expected_c = lpclip_sequence(1.0, accuracy_of, 8)
    assert np.allclose(fitted[7:], expected_fits, rtol=1e-12)
    assert result.C == pytest.approx(expected_c, rel=1e-12)
    # the kept C is the best one fitted, up to the validation resolution, and close to the true optimum
    assert result.val_accuracy == max(acc for _, acc in result.trace)
    assert abs(np.log10(result.C) - np.log10(3.0)) < 0.05


def test_ties_keep_the_first_grid_value_and_the_left_end(monkeypatch):
    result = stub_search(lambda c: 0.5, steps=2, monkeypatch=monkeypatch)
    fitted = [c for c, _ in result.trace]
    # every C scores alike: the grid's first value (1e6), then the left end of each round
    assert fitted[7:9] == pytest.approx([1e5, 1e7]) and result.C == pytest.approx(1e5)
    assert stub_search(lambda c: 0.5, steps=0, monkeypatch=monkeypatch).C == 1e6


def test_the_probe_solves_separable_features_and_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    train, val, test = blobs(seed=0), blobs(per_class=4, seed=0), blobs(per_class=20, seed=0)
    result = search_c(train, val, LPCLIP_C_GRID, 3, 1000, log=lambda line: None)
    assert (result.classifier.predict(test[0]) == test[1]).all()
    assert result.val_accuracy == 100.0
    reference = LogisticRegression(solver="lbfgs", max_iter=1000, C=result.C).fit(*train)
    assert np.array_equal(result.classifier.predict(test[0]), reference.predict(test[0]))
    assert np.allclose(result.classifier.scores(test[0]), reference.decision_function(test[0]))


def test_a_binary_problem_keeps_sklearn_s_decisions():
    from sklearn.linear_model import LogisticRegression

    features, labels = blobs(n_classes=2, spread=3.0, seed=3)
    model = LogisticRegression(solver="lbfgs", max_iter=1000, C=0.01).fit(features, labels)
    classifier = Classifier.from_sklearn(model)
    assert classifier.weight.shape == (2, features.shape[1])
    assert np.array_equal(classifier.predict(features), model.predict(features))


def test_class_rows_map_a_subset_and_refuse_unseen_classes():
    rows = LinearProbeCLIP.class_rows(["cat", "dog", "owl"], ["owl", "cat"], "run")
    assert rows.tolist() == [2, 0]
    with pytest.raises(InputError, match="scores only the 3 classes it was trained on.*'fox'"):
        LinearProbeCLIP.class_rows(["cat", "dog", "owl"], ["fox", "cat"], "run")


# ---------------------------------------------------------------------------------------------- agreement


OFFICIAL_STYLE = '''
# A probe script in the style of CoOp's lpclip/linear_probe.py (same command line, draws, search and report
# lines), written for this test; scripts/compare_lpclip.py runs the official file the same way.
import argparse, os
import numpy as np
from sklearn.linear_model import LogisticRegression
p = argparse.ArgumentParser()
p.add_argument("--dataset"); p.add_argument("--num_step", type=int); p.add_argument("--num_run", type=int)
p.add_argument("--feature_dir")
a = p.parse_args()
load = lambda s: np.load(os.path.join(a.feature_dir, a.dataset, s + ".npz"))
(tr, trl), (va, val_), (te, tel) = [(f["feature_list"], f["label_list"]) for f in map(load, ["train", "val", "test"])]
os.makedirs("report", exist_ok=True)
out = open("report/%s_s%dr%d_details.txt" % (a.feature_dir, a.num_step, a.num_run), "a+")
def acc(c, x, y):
    m = LogisticRegression(solver="lbfgs", max_iter=1000, C=c).fit(x, y)
    return m, (m.predict(va_x) == va_y).mean()
for k in [1, 2, 4, 8, 16]:
    for seed in range(1, a.num_run + 1):
        np.random.seed(seed)
        pick = lambda labels, n: [i for l in np.unique(labels) for i in np.random.choice(np.where(labels == l)[0], n, replace=False)]
        t = pick(trl, k); v = pick(val_, {1: 1, 2: 2, 4: 4, 8: 4, 16: 4}[k])
        x, y, va_x, va_y = tr[t], trl[t], va[v], val_[v]
        grid = [1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6]
        c = grid[int(np.argmax([acc(g, x, y)[1] for g in grid]))]
        lo, hi = 1e-1 * c, 1e1 * c
        for step in range(a.num_step):
            (ml, al), (mr, ar) = acc(lo, x, y), acc(hi, x, y)
            if al < ar:
                cf, mf = hi, mr; lo, hi = 0.5 * (np.log10(hi) + np.log10(lo)), np.log10(hi)
            else:
                cf, mf = lo, ml; hi, lo = 0.5 * (np.log10(hi) + np.log10(lo)), np.log10(lo)
            lo, hi = np.power(10, lo), np.power(10, hi)
            out.write("{}, seed {}, {} shot, weight {}, test_acc {:.2f}\\n".format(
                a.dataset, seed, k, cf, 100 * (mf.predict(te) == tel).sum() / len(tel)))
'''


def test_compare_lpclip_runs_an_lpclip_style_probe_on_the_same_files(tmp_path, capsys):
    for split, per_class in (("train", 16), ("val", 4), ("test", 10)):
        features, labels = blobs(n_classes=3, per_class=per_class, spread=2.5, seed=per_class)
        write_lpclip_features(str(tmp_path / "feat" / "Toy" / f"{split}.npz"), features, labels)
    script = tmp_path / "linear_probe.py"
    script.write_text(OFFICIAL_STYLE)
    status = compare_lpclip.main(["--lpclip", str(script), "--feature-dir", str(tmp_path / "feat"), "--dataset", "Toy",
                                  "--runs", "1", "--steps", "2"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "5 of 5 agree" in out and "| 16 | 1 |" in out


# ---------------------------------------------------------------------------------------------- the trainer


def probe_args(root, output_dir, dataset="demo", seed="1", *opts, flags=()):
    return ["--root", root, "--seed", seed, "--trainer", "LinearProbeCLIP",
            "--dataset-config-file", os.path.join(REPO, "configs", "datasets", f"{dataset}.yaml"),
            "--config-file", os.path.join(REPO, "configs", "trainers", "LinearProbeCLIP", "tiny.yaml"),
            "--output-dir", output_dir, *flags, "DATASET.NUM_SHOTS", "2", *opts]


def probe(root, output_dir, dataset="demo", seed="1", *opts):
    """The trainer train.py builds for these arguments (in this process: quicker than a train.py each)."""
    args = train.build_parser().parse_args(probe_args(root, output_dir, dataset, seed, *opts))
    train.import_plugins([])
    cfg = train.setup_cfg(args)
    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """(data root, run folder, stdout) of `python train.py` fitting the probe on 2-shot demo pictures."""
    root = str(tmp_path_factory.mktemp("data"))
    run = str(tmp_path_factory.mktemp("runs") / "seed1")
    result = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *probe_args(root, run)], cwd=REPO,
                            capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, run, result.stdout


def test_train_py_fits_saves_and_caches_lpclip_files(probe_run):
    root, run, stdout = probe_run
    assert "Finish training" in stdout and "Chosen C = " in stdout and "* accuracy: " in stdout
    assert os.path.isfile(os.path.join(run, "linear_head", "model.pth.tar-1"))
    tag_dirs = os.listdir(os.path.join(root, "clip_feat"))
    assert len(tag_dirs) == 1 and tag_dirs[0].startswith(f"{TINY}_fp32_")
    demo = os.path.join(root, "clip_feat", tag_dirs[0], "Demo")
    features, labels = read_lpclip_features(os.path.join(demo, "train.npz"))
    # the full split, in its order, with the backbone's 32-wide image features
    assert features.shape == (640, 32) and labels.tolist() == np.repeat(np.arange(20), 32).tolist()
    assert json.load(open(os.path.join(demo, "test.json")))["images"] == 1000


def test_the_cache_is_reused_across_seeds_and_invalidated_by_transform_and_images(probe_run, tmp_path, capsys):
    root, _, _ = probe_run
    trainer = probe(root, str(tmp_path / "seed2"), "demo", "2")
    trainer.train()
    out = capsys.readouterr().out
    assert "Extracting" not in out and out.count("read from") == 3
    # another normalisation is another transform: new files in another folder
    probe(root, str(tmp_path / "mean"), "demo", "1", "INPUT.PIXEL_MEAN", "[0.5,0.5,0.5]").train()
    assert capsys.readouterr().out.count("Extracting features") == 3
    assert len(os.listdir(os.path.join(root, "clip_feat"))) == 2
    # a replaced image invalidates the split it belongs to
    image = os.path.join(root, "demo", "images", "star", "val_003.png")
    os.utime(image, ns=(os.stat(image).st_atime_ns, os.stat(image).st_mtime_ns + 10 ** 9))
    probe(root, str(tmp_path / "seed3"), "demo", "3").train()
    out = capsys.readouterr().out
    assert "Extracting features of the val split" in out and out.count("read from") == 2


def test_a_finished_run_resumes_without_refitting(probe_run, capsys):
    root, run, stdout = probe_run
    probe(root, run).train()
    out = capsys.readouterr().out
    assert "Fitting" not in out and accuracy(out) == accuracy(stdout)


def test_fewshot_sampling_uses_the_prompt_methods_split(probe_run, tmp_path, capsys):
    root, _, _ = probe_run
    probe(root, str(tmp_path / "fs"), "demo", "1", "TRAINER.LINEAR_PROBE.SAMPLING", "fewshot").train()
    out = capsys.readouterr().out
    assert "lpclip sampling" not in out and "Fitting the linear probe on 40 images" in out


def test_transfer_to_a_class_subset_and_refusal_of_unseen_classes(probe_run, tmp_path, capsys):
    root, run, _ = probe_run
    subset = probe(root, str(tmp_path / "mosaic"), "demo_mosaic")
    subset.load_model(run, epoch=1)
    subset.test()
    out = capsys.readouterr().out
    assert "20 classes" in out and "* total: 250" in out
    unseen = probe(root, str(tmp_path / "nature"), "demo_nature")
    with pytest.raises(InputError, match="scores only the 20 classes it was trained on"):
        unseen.load_model(run, epoch=1)


@pytest.mark.parametrize("key, value, reason", [
    ("DATASET.SUBSAMPLE_CLASSES", "base", "base-to-novel does not apply"),
    ("TEST.FINAL_MODEL", "best_val", "best_val does not apply"),
    ("TRAINER.LINEAR_PROBE.SAMPLING", "random", "SAMPLING must be one of lpclip, fewshot"),
    ("TRAINER.LINEAR_PROBE.PREC", "fp8", "TRAINER.LINEAR_PROBE.PREC must be one of"),
])
def test_bad_settings_are_refused_with_the_reason(key, value, reason):
    args = train.build_parser().parse_args(probe_args("data", "out", "demo", "1", key, value))
    train.import_plugins([])
    with pytest.raises(ConfigError, match=reason):
        LinearProbeCLIP.check_cfg(LinearProbeCLIP.__new__(LinearProbeCLIP), train.setup_cfg(args))


def test_the_api_classifies_with_the_probe_over_its_own_classes_or_a_subset(probe_run):
    from api import load_prompted_clip

    root, run, _ = probe_run
    pictures = [os.path.join(root, "demo", "images", name, f"test_{i:03d}.png") for name in ("circle", "star")
                for i in range(3)]
    model = load_prompted_clip(run, ["star", "circle"])
    assert model.logits(pictures).shape == (6, 2)
    assert len(model.classify(pictures[0], topk=1)[0]) == 1
    with pytest.raises(InputError, match="scores only"):
        load_prompted_clip(run, ["cloud"])


def accuracy(stdout):
    return float(stdout.rsplit("* accuracy: ", 1)[1].split("%")[0])


def test_the_probe_benchmark_times_a_search_and_writes_its_json(tmp_path, capsys):
    from benchmarks import bench_linear_probe

    out = tmp_path / "probe.json"
    assert bench_linear_probe.main(["--problem", "5", "2", "8", "--steps", "1", "--json", str(out)]) == 0
    assert "5 | 2 | 8 | 9 |" in capsys.readouterr().out  # 7 grid values + 2 fits of the one round
    (row,) = json.loads(out.read_text())["table"]
    assert row["fits"] == 9 and row["wall_s"] > 0 and row["cpu_s"] > 0
