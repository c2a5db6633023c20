"""check-lossless analysis: output comparison (hand-computed positions) and the sampling test
(surprise z) on a tiny model whose exact distributions the test computes."""

from __future__ import annotations

import math

import pytest

from speedbench.analysis.lossless import compare_outputs, first_divergence, paired_z, surprise_z, welch_z
from speedbench.records import RequestRecord


def _rec(qid, ids=None, text="", error=None, turn=0):
    return RequestRecord(
        question_id=qid,
        category="qa",
        turn=turn,
        start_ns=0,
        end_ns=1,
        output_token_ids=ids,
        output_text=text,
        error=error,
    )


def test_first_divergence_positions():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2  # a prefix: diverges where the shorter ends
    assert first_divergence("abc", "abd") == 2


def test_compare_outputs_tokens_text_and_errors():
    base = [_rec("a", [1, 2, 3]), _rec("b", [4, 5, 6]), _rec("c", None, "hello world"), _rec("d", [1])]
    sd = [
        _rec("a", [1, 2, 3]),
        _rec("b", [4, 9, 6]),
        _rec("c", None, "hello there"),
        _rec("d", error={"cause": "reset", "detail": ""}),
    ]
    r = compare_outputs(base, sd)
    assert (r["pairs"], r["identical"]) == (3, 1) and r["identical_share"] == pytest.approx(1 / 3)
    mb, mc = r["mismatches"]
    assert (mb["question_id"], mb["unit"], mb["first_divergence"], mb["sd_at"]) == ("b", "token", 1, [9, 6])
    assert (mc["unit"], mc["first_divergence"], mc["baseline_at"], mc["sd_at"]) == ("char", 6, "world", "there")
    assert r["errors"][0]["question_id"] == "d"


def test_z_statistics_hand_computed():
    # diffs 1, 2, 3: mean 2, sd 1 -> z = 2 / (1 / sqrt 3)
    assert paired_z({"a": 0, "b": 0, "c": 0}, {"a": 1, "b": 2, "c": 3})[0] == pytest.approx(2 * math.sqrt(3))
    # a: [0, 2] mean 1 var 2; b: [3, 5] mean 4 var 2 -> z = 3 / sqrt(2/2 + 2/2)
    assert welch_z([0, 2], [3, 5]) == pytest.approx(3 / math.sqrt(2))
    assert surprise_z([{"surprise": 3.0, "variance": 4.0}, {"surprise": 1.0, "variance": 12.0}]) == pytest.approx(1.0)


torch = pytest.importorskip("torch")


def test_surprise_z_accepts_target_samples_and_rejects_greedy_and_wrong_temperature(tiny_pair_dirs):
    """Tokens sampled from the target at T pass (|z| small); greedy tokens, or samples at another
    temperature, fail by far -- so the test can fail."""
    from speedbench.analysis.lossless import TargetScorer

    torch.manual_seed(0)
    T = 1.0
    scorer = TargetScorer(tiny_pair_dirs["target"], T)
    model = scorer.model
    messages = [[{"role": "user", "content": f"question {i}: tell me about number {i}"}] for i in range(12)]

    def generate(msgs, mode):
        ids = scorer.prompt_ids(msgs)
        out = []
        with torch.no_grad():
            for _ in range(24):
                logits = model(torch.tensor([ids + out])).logits[0, -1].double()
                if mode == "greedy":
                    out.append(int(logits.argmax()))
                else:
                    t = T if mode == "sample" else 0.3 * T
                    out.append(int(torch.multinomial(torch.softmax(logits / t, -1), 1)))
        return _rec("q", out)

    z = {
        mode: surprise_z([scorer.score(m, generate(m, mode)) for m in messages])
        for mode in ("sample", "greedy", "cold")
    }
    assert abs(z["sample"]) < 4, z
    assert z["greedy"] > 6 and z["cold"] > 4, z  # too-likely tokens: SD that does not sample from p


def test_check_lossless_cli_on_the_mock_and_its_errors(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "ll"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "speedbench.cli",
            "check-lossless",
            "--engine",
            "mock",
            "--sd",
            "ngram",
            "-n",
            "6",
            "--control",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads((out / "lossless.json").read_text())
    assert r["lossless"] is True and r["outputs"]["pairs"] == 6 and r["control"]["identical"] == 6
    for sub in ("baseline", "control", "sd"):
        assert (out / sub / "summary.json").exists()
    # attached to one server there is no baseline: one line saying what to pass
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "speedbench.cli",
            "check-lossless",
            "--engine",
            "vllm",
            "--sd",
            "ngram",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and p.stderr.startswith("error: attached to a server: pass --baseline-url")
    p = subprocess.run(
        [sys.executable, "-m", "speedbench.cli", "check-lossless", "--engine", "mock", "--out", str(tmp_path / "y")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "needs --sd METHOD" in p.stderr


def test_check_lossless_says_inconclusive_when_the_engine_is_not_deterministic_without_sd(tmp_path):
    """A mock whose batched replies change on every engine start (batch-dependent numerics): the SD run differs
    from the baseline, but so does the control; the verdict is INCONCLUSIVE (exit 3), not NOT LOSSLESS, and the
    tool finds that concurrency 1 makes the engine deterministic."""
    import json
    import subprocess
    import sys

    out = tmp_path / "ll"
    args = ["check-lossless", "--engine", "mock", "--sd", "ngram", "-n", "8", "-c", "4", "--output-len", "16"]
    args += ["-E", "batch_nondeterminism=1", "--control", "--out", str(out)]
    p = subprocess.run([sys.executable, "-m", "speedbench.cli", *args], capture_output=True, text=True, timeout=300)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "INCONCLUSIVE" in p.stdout and "NOT LOSSLESS" not in p.stdout
    r = json.loads((out / "lossless.json").read_text())
    assert r["verdict"] == "inconclusive" and r["lossless"] is False
    assert r["control"]["identical"] < r["control"]["pairs"] == 8
    assert "at --concurrency 1 it is deterministic (8/8 identical" in r["note"], r["note"]
    # the same engine alone in its batch is deterministic, and SD on it is lossless
    p = subprocess.run(
        [sys.executable, "-m", "speedbench.cli", *args, "-c", "1", "--out", str(tmp_path / "c1")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads((tmp_path / "c1" / "lossless.json").read_text())["verdict"] == "lossless"
