"""`t2ictl experiment`: the grid and its equal budget, the seed statistics against SciPy and by hand, the report, the
locks that let slices share a folder, and a tiny grid killed at a random point and run again."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY, prepare_shapes
from scipy import stats
from typer.testing import CliRunner

from t2ictl.cli import app
from t2ictl.errors import UserError
from t2ictl.experiment import chart, grid, report, runner, statistics


def test_values_split_at_commas_outside_brackets_and_quotes():
    assert grid.split_values("true,false") == ["true", "false"]
    assert grid.split_values('[64, 128],[32], "a,b"') == ["[64, 128]", "[32]", '"a,b"']


@pytest.mark.parametrize("option, message", [("contrastive.enabled", "section.key=V1,V2"),
                                             ("enabled=true", "section.key=V1,V2"),
                                             ("runtime.seed=1,2", "--seeds"),
                                             ("model.nf=8,16,8", "listed twice")])
def test_a_malformed_vary_is_one_clear_error(option, message):
    with pytest.raises(UserError, match=message):
        grid.parse_vary([option])


def test_seeds_and_slices_are_checked():
    assert grid.parse_seeds("0,1,2") == [0, 1, 2]
    for bad in ("0,0", "a", ""):
        with pytest.raises(UserError):
            grid.parse_seeds(bad)
    assert grid.parse_slice("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "1-2"):
        with pytest.raises(UserError):
            grid.parse_slice(bad)


def test_the_grid_pairs_arms_by_seed_at_an_equal_budget_and_shares_what_phase_1_does_not_vary():
    varied = grid.parse_vary(["contrastive.enabled=true,false", "train.mode_seeking_weight=0,0.5"])
    built = grid.build_grid("shapes", ["data.batch_size=8"], varied, [0, 1])
    assert [a.overrides for a in built.arms] == [
        ("contrastive.enabled=true", "train.mode_seeking_weight=0"),
        ("contrastive.enabled=true", "train.mode_seeking_weight=0.5"),
        ("contrastive.enabled=false", "train.mode_seeking_weight=0"),
        ("contrastive.enabled=false", "train.mode_seeking_weight=0.5")]
    assert [(r.seed, r.arm.index) for r in built.runs] == [(s, a) for s in (0, 1) for a in (1, 2, 3, 4)]
    # every arm sees 16 images a step: 8 + 8 label pairs with the framework, one batch of 16 without
    assert {r.images_per_step for r in built.runs} == {16}
    off = [r for r in built.runs if "contrastive.enabled=false" in r.arm.overrides]
    assert all("data.batch_size=16" in r.train_overrides and "data.batch_size=16" in r.pretrain_overrides
               for r in off)
    # one pretraining per (framework on/off, seed): mode seeking is a GAN-phase key
    keys = {(r.arm.overrides[0], r.seed): set() for r in built.runs}
    for r in built.runs:
        keys[(r.arm.overrides[0], r.seed)].add(r.pretrain_key)
    assert all(len(k) == 1 for k in keys.values()) and len({next(iter(k)) for k in keys.values()}) == 4
    assert not any(o.startswith("train.") for r in built.runs for o in r.pretrain_overrides)


def test_slices_cover_every_run_once():
    built = grid.build_grid("shapes", [], grid.parse_vary(["contrastive.gan_weight=0.1,0.2,0.3"]), [0, 1, 2, 3])
    slices = [grid.my_runs(built, part, 3) for part in (1, 2, 3)]
    assert sorted((r.arm.index, r.seed) for s in slices for r in s) == sorted((r.arm.index, r.seed)
                                                                               for r in built.runs)
    assert max(len(s) for s in slices) - min(len(s) for s in slices) <= 1


def test_paired_statistics_match_scipy_and_a_hand_computation():
    arm = {0: 10.0, 1: 12.5, 2: 11.0}
    baseline = {0: 11.0, 1: 13.0, 2: 13.5}
    got = statistics.paired(arm, baseline)
    d = np.array([-1.0, -0.5, -2.5])
    assert got.p_value == pytest.approx(stats.ttest_rel([10, 12.5, 11], [11, 13, 13.5]).pvalue, rel=1e-10)
    half = 4.302652729911275 * d.std(ddof=1) / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert (got.low, got.high) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-10)
    assert got.relative == pytest.approx(d.mean() / np.mean([11, 13, 13.5]))
    summary = statistics.summarize([10.0, 12.5, 11.0])
    assert (summary.mean, summary.std, summary.n) == pytest.approx((11.1666666, np.std([10, 12.5, 11], ddof=1), 3))
    assert statistics.paired({5: 1.0}, {6: 1.0}) is None  # no seed in common
    assert math.isnan(statistics.paired({0: 1.0}, {0: 2.0}).p_value)  # one seed: no test
    assert statistics.smallest_detectable(3) == pytest.approx(4.3027, rel=1e-4)


def _fake_run(out: Path, run: grid.Run, values: dict[str, float]) -> None:
    from t2ictl import fileio, recipes

    folder = grid.run_folder(out, run)
    folder.mkdir(parents=True)
    recipe = recipes.load_recipe("shapes", list(run.train_overrides))
    fileio.write_text(folder / "recipe.toml", recipes.recipe_to_toml(recipe))
    fileio.write_json(folder / runner.SCORE_FILE, {"results": [{"metric": k, "value": v} for k, v in values.items()],
                                                  "protocol": {"n": 100}})


def test_the_report_holds_every_run_and_compares_arms_seed_by_seed(tmp_path):
    built = grid.build_grid("shapes", [], grid.parse_vary(["contrastive.enabled=true,false"]), [0, 1, 2])
    rng = np.random.default_rng(0)
    fids = {}
    for run in built.runs[:-1]:  # the last run (arm 2, seed 2) has not finished
        fids[(run.arm.index, run.seed)] = float(rng.uniform(10, 20))
        _fake_run(tmp_path, run, {"FID": fids[(run.arm.index, run.seed)], "both_accuracy": 0.5})
    records = report.collect(built, tmp_path)
    assert len(records) == 5 and all(r["recipe"]["runtime"]["seed"] == r["seed"] for r in records)
    written = report.write(built, records, tmp_path, {"recipe": "shapes"})
    saved = json.loads((tmp_path / report.RESULTS).read_text())
    assert saved["summary"] == json.loads(json.dumps(written["summary"]))
    first, second = saved["summary"]["FID"]
    assert first["mean"] == pytest.approx(np.mean([fids[(1, s)] for s in range(3)]))
    assert second["n"] == 2 and second["paired_vs_arm_1"]["n"] == 2  # paired only where both arms finished
    expected = np.mean([fids[(2, s)] - fids[(1, s)] for s in range(2)])
    assert second["paired_vs_arm_1"]["difference"] == pytest.approx(expected)
    text = (tmp_path / "results.md").read_text()
    assert "## FID (lower is better)" in text and "2 degree(s) of freedom" in text and "equal budget" in text
    picture = tf.io.decode_png(tf.io.read_file(str(tmp_path / "results.png"))).numpy()
    assert picture.shape[2] == 3 and picture.shape[1] > 2 * picture.shape[0] // 3  # two panels side by side
    assert (np.all(picture == chart.POINT, axis=2)).sum() >= 5 * 9 * chart.SCALE ** 2  # five seeds drawn as points


def test_a_two_key_grid_reports_each_key_with_the_other_held_and_their_interaction(tmp_path):
    built = grid.build_grid("shapes", [], grid.parse_vary(["pretrain.epochs=3,6", "contrastive.enabled=false,true"]),
                            [0, 1, 2])
    assert [arm.overrides for arm in built.arms] == [
        ("pretrain.epochs=3", "contrastive.enabled=false"), ("pretrain.epochs=3", "contrastive.enabled=true"),
        ("pretrain.epochs=6", "contrastive.enabled=false"), ("pretrain.epochs=6", "contrastive.enabled=true")]
    # binary fractions, so that every difference is exact: the framework adds 0.25 at 3 epochs and 0.125 at 6,
    # six epochs add 0.5 without it; seeds shift every arm alike, except arm 4 at seed 2 (spread in the interaction)
    accuracy = {1: 0.0, 2: 0.25, 3: 0.5, 4: 0.625}
    for run in built.runs:
        extra = 0.0625 if (run.arm.index, run.seed) == (4, 2) else 0.0
        _fake_run(tmp_path, run, {"shape_accuracy": accuracy[run.arm.index] + 0.125 * run.seed + extra})
    written = report.write(built, report.collect(built, tmp_path), tmp_path, {"recipe": "shapes"})
    saved = json.loads((tmp_path / report.RESULTS).read_text())["contrasts"]["shape_accuracy"]
    assert saved == json.loads(json.dumps(written["contrasts"]["shape_accuracy"]))
    assert [row["arms"] for row in saved] == [[3, 1], [4, 2], [2, 1], [4, 3], [4, 2, 3, 1]]
    assert saved[3]["contrast"] == "contrastive.enabled=true vs false, at pretrain.epochs=6"
    assert [row["difference"] for row in saved[:3]] == pytest.approx([0.5, 0.375 + 0.0625 / 3, 0.25])
    assert saved[2]["p_value"] == 0.0 and saved[2]["low"] == saved[2]["high"] == 0.25  # the same on every seed
    interaction = saved[4]
    per_seed = np.array([-0.125, -0.125, -0.0625])  # (arm 4 - arm 2) - (arm 3 - arm 1), seed by seed
    assert interaction["difference"] == pytest.approx(per_seed.mean())
    assert interaction["p_value"] == pytest.approx(stats.ttest_1samp(per_seed, 0.0).pvalue, rel=1e-10)
    text = (tmp_path / "results.md").read_text()
    assert "| contrastive.enabled=true vs false, at pretrain.epochs=6 (arm 4 vs 3) | 3 | +0.1458 |" in text
    assert "interaction of pretrain.epochs=6 and contrastive.enabled=true" in text
    assert "Each metric below has 8 tests, none corrected" in text  # 3 against arm 1, 4 contrasts, 1 interaction


def test_contrasts_hold_every_other_key_and_say_where_seeds_are_missing(tmp_path):
    built = grid.build_grid("shapes", [], grid.parse_vary(
        ["train.epochs=1,2,3", "contrastive.enabled=false,true", "model.nf=8,16"]), [0, 1])
    arms = {arm.overrides: arm.index for arm in built.arms}
    pairs = {(label, arm, reference) for label, arm, reference in report.contrasts(built)}
    assert len(pairs) == 2 * (2 * 2) + 1 * (3 * 2) + 1 * (3 * 2)  # each changed value, at every setting of the rest
    # the third value of a three-valued key is compared with its first, the other two keys held
    assert ("train.epochs=3 vs 1, at contrastive.enabled=true, model.nf=16",
            arms[("train.epochs=3", "contrastive.enabled=true", "model.nf=16")],
            arms[("train.epochs=1", "contrastive.enabled=true", "model.nf=16")]) in pairs
    assert len(report.interactions(built)) == 2 * 1 + 2 * 1 + 1 * 1
    assert report.contrasts(grid.build_grid("shapes", [], grid.parse_vary(["contrastive.enabled=false,true"]),
                                            [0])) == []  # one key: the table against arm 1 is every contrast
    two_by_two = grid.build_grid("shapes", [], grid.parse_vary(["pretrain.epochs=3,6",
                                                                "contrastive.enabled=false,true"]), [0])
    for run in two_by_two.runs[1:]:  # arm 1 never finished, as when another slice runs it
        _fake_run(tmp_path, run, {"shape_accuracy": 0.5})
    report.write(two_by_two, report.collect(two_by_two, tmp_path), tmp_path, {"recipe": "shapes"})
    text = (tmp_path / "results.md").read_text()
    assert text.count("no seed in common with arm 1") == 3 and "(baseline)" not in text
    assert "at contrastive.enabled=false (arm 3 vs 1) | 0 |  | no seed finished in all of these arms" in text


def _hold_lock(path, seconds, started):
    with runner.folder_lock(Path(path), "waiting"):
        started.set()
        time.sleep(seconds)


def test_the_lock_makes_a_second_process_wait_for_the_first(tmp_path, capsys):
    started = multiprocessing.get_context("fork").Event()
    holder = multiprocessing.get_context("fork").Process(target=_hold_lock, args=(tmp_path / "x.lock", 1.5, started))
    holder.start()
    started.wait(10)
    begun = time.perf_counter()
    with runner.folder_lock(tmp_path / "x.lock", "waiting for x: another process runs it"):
        waited = time.perf_counter() - begun
    holder.join()
    assert waited > 0.5 and "waiting for x" in capsys.readouterr().out


# -- a tiny grid, for real -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Tiny shapes data of its own, with its evaluation networks fitted briefly."""
    data = prepare_shapes(tmp_path_factory.mktemp("experiment") / "shapes", 320)
    result = CliRunner().invoke(app, ["evaluator", "--data", str(data), "--epochs", "2", "--damsm-epochs", "1"])
    assert result.exit_code == 0, result.output
    return data


def grid_args(data: Path, out: Path) -> list[str]:
    sets = [part for override in [*TINY, "pretrain.epochs=1", "train.epochs=2"] for part in ("--set", override)]
    return ["experiment", "--recipe", "shapes", "--data", str(data), "--out", str(out), "--seeds", "0",
            "--vary", "contrastive.gan_weight=0.1,0.4", "--num", "64", *sets]


def t2ictl(*args: str, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "t2ictl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs)


def figures(out: Path) -> dict:
    saved = json.loads((out / report.RESULTS).read_text())
    return {(r["arm"], r["seed"]): r["metrics"] for r in saved["runs"]}


@pytest.fixture(scope="module")
def finished_grid(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid") / "uninterrupted"
    process = t2ictl(*grid_args(tiny_data, out))
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    return out, output


def test_a_tiny_grid_runs_shares_its_pretraining_and_reports(finished_grid):
    out, output = finished_grid
    pretrainings = [p for p in (out / "pretrain").iterdir() if not p.name.startswith(".")]  # not the lock files
    assert len(pretrainings) == 1  # contrastive.gan_weight is a GAN-phase key: one pretraining
    found = figures(out)
    assert set(found) == {(1, 0), (2, 0)}
    for metrics in found.values():
        assert {"FID", "IS", "R-precision", "both_accuracy"} <= set(metrics)
        assert all(np.isfinite(v) for v in metrics.values())
    assert found[(1, 0)]["FID"] != found[(2, 0)]["FID"]  # the arms trained differently
    assert "2 of 2 runs finished and scored" in output and "FID (lower is better)" in output
    assert "one seed: no spread and no test" in output
    assert (out / "results.png").stat().st_size > 0


def test_a_finished_grid_run_again_does_nothing_but_report(finished_grid, tiny_data):
    out, _ = finished_grid
    logs = sorted(p.read_text() for p in (out / "logs").iterdir())
    result = CliRunner().invoke(app, grid_args(tiny_data, out))
    assert result.exit_code == 0, result.output
    assert sorted(p.read_text() for p in (out / "logs").iterdir()) == logs  # no step ran
    other = CliRunner().invoke(app, [*grid_args(tiny_data, out), "--set", "train.ema_decay=0.5"])
    assert isinstance(other.exception, UserError) and "use another --out" in str(other.exception)


def test_the_plan_prints_the_steps_and_slices_split_them(finished_grid, tiny_data, tmp_path):
    out = tmp_path / "planned"
    plans = []
    for only in ("1/2", "2/2"):
        result = CliRunner().invoke(app, [*grid_args(tiny_data, out), "--plan", "--only", only])
        assert result.exit_code == 0, result.output
        plans.append([line for line in result.output.splitlines() if line.startswith("t2ictl ")])
    kinds = [[line.split()[1] for line in plan] for plan in plans]
    assert kinds == [["evaluator", "pretrain", "train", "score"]] * 2  # each slice may pretrain
    assert plans[0][0].endswith("# done")  # the evaluation networks of tiny_data are fitted
    assert plans[0][1] == plans[1][1]  # the same shared pretraining: the lock lets one of them run it
    assert plans[0][2] != plans[1][2]
    assert not out.exists()  # a plan writes nothing


def test_an_experiment_killed_at_a_random_point_finishes_with_the_same_results(finished_grid, tiny_data, tmp_path):
    """The first of the grid's two slices (pretrain, train, score of arm 1), killed and run again."""
    reference, _ = finished_grid
    out = tmp_path / "killed"
    seed = int(os.environ.get("T2ICTL_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    started_steps = rng.randint(1, 3)  # of the 3: pretrain, train, score
    delay = rng.uniform(0.0, 6.0)
    process = t2ictl(*grid_args(tiny_data, out), "--only", "1/2")
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        logs = list((out / "logs").glob("*.log")) if (out / "logs").is_dir() else []
        if sum(p.read_text(errors="replace").count("\n$ ") + p.read_text(errors="replace").startswith("$ ")
               for p in logs) >= started_steps:
            break
        time.sleep(0.2)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    again = t2ictl(*grid_args(tiny_data, out), "--only", "1/2")
    output, _ = again.communicate(timeout=900)
    assert again.returncode == 0, f"kill seed {seed}: {output}"
    got, expected = figures(out), figures(reference)
    assert set(got) == {(1, 0)}, f"kill seed {seed}"
    for key in got:
        for metric, value in expected[key].items():
            assert got[key][metric] == pytest.approx(value, rel=1e-4, abs=1e-6), (f"kill seed {seed}", key, metric)


def test_the_evaluation_classifier_scores_as_an_inception_network_of_its_own(tiny_data):
    from t2ictl.data import pipeline
    from t2ictl.evaluation import fid, shapes_network
    from t2ictl.evaluation.inception import load_network

    folder = shapes_network.folder(tiny_data)
    network = load_network(str(folder))
    assert (network.mode, network.pool_dim, network.exclusive_classes) == ("shapes classifier", 128, True)
    assert "to 32" in network.resize
    images = np.concatenate(list(pipeline.split_images(tiny_data, "test", 32, 32).as_numpy_iterator()))
    pool, logits = network(images)
    assert pool.shape == (64, 128) and logits.shape == (64, 20)
    # what the classifier's layers compute, by hand from the saved model
    import keras

    model = keras.models.load_model(folder / shapes_network.MODEL_FILE, compile=False)
    direct = model(tf.image.resize(images.astype(np.float32), [32, 32], antialias=True) / 127.5 - 1.0)
    np.testing.assert_allclose(pool, direct["features"].numpy(), rtol=1e-5, atol=1e-5)
    half = fid.frechet_distance(pool[:32].mean(0), np.cov(pool[:32], rowvar=False), pool[:32].mean(0),
                                np.cov(pool[:32], rowvar=False))
    assert abs(half) < 1e-3
    assert shapes_network.fitted(folder, tiny_data)
    info = json.loads((folder / shapes_network.INFO_FILE).read_text())
    assert info["version"] == shapes_network.VERSION and info["epochs"] == 2


def test_a_score_made_with_another_fit_of_the_evaluation_classifier_is_made_again(tmp_path):
    from t2ictl import fileio
    from t2ictl.evaluation import shapes_network

    evaluator = tmp_path / "evaluator"
    scoring = runner.Scoring(tmp_path, 100, str(evaluator), evaluator / "damsm", evaluator)
    fileio.write_json(evaluator / shapes_network.INFO_FILE, {"sha256": "aaa"})
    score = tmp_path / "score.json"
    fileio.write_json(score, {"results": [], "protocol": {"network_sha256": "aaa"}})
    assert runner._scored_with_evaluator(score, scoring)
    fileio.write_json(evaluator / shapes_network.INFO_FILE, {"sha256": "bbb"})  # fitted again
    assert not runner._scored_with_evaluator(score, scoring)
    other = runner.Scoring(tmp_path, 100, "pt_inception.pth", None, evaluator)  # a network the grid was given
    assert runner._scored_with_evaluator(score, other)
