"""``mtlrec serve``: TF Serving's REST API over an export, on loopback.

Both request forms answer as ``mtlrec predict`` does on the same rows; a new version is
served while a client keeps sending requests, without a failed one; every bad request
gets TF Serving's ``{"error": ...}`` with 400 or 404, naming the input; the status and
metadata endpoints answer as TF Serving's; the command's bad arguments exit 2."""

import asyncio
import copy
import importlib.util
import json
import math
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtlrec.training.serving.export import export_model
from mtlrec.training.serving.predict import batch_inputs, input_files, predict_file

_spec = importlib.util.spec_from_file_location("mtlrec_training_conftest", Path(__file__).with_name("conftest.py"))
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
SCHEMA, REPO, subprocess_env = _fixtures.SCHEMA, _fixtures.REPO, _fixtures.subprocess_env

TASKS = [{"name": "ctr", "label": "click"}, {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}]
INPUTS = ["hist_item_id", "item_hist_ctr", "item_id", "price", "scene", "user_id"]


def _schema():
    schema = copy.deepcopy(SCHEMA)
    schema["numeric"][1].update(mean=0.08, std=0.05)
    return schema


def _export(root, seed, warmup_rows):
    """An untrained ESMM of the tiny schema (weights by ``seed``) exported under ``root``."""
    from mtlrec.models import build_model

    schema = _schema()
    model = build_model({"type": "esmm", "tower_units": [8], "seed": seed}, schema, TASKS)
    meta = {"name": "tiny_esmm", "schema": schema, "key": "impression_id"}
    return export_model(model, root, metadata=meta, warmup=warmup_rows)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, funnel_root):
    """``(export root with version 1, a second model's version, a Parquet file of 12 rows)``.

    The rows' histories are made longer than max_len (4) for some rows, empty for one, and
    one row's price is NaN (read as the feature's default by training and ``predict``)."""
    base = tmp_path_factory.mktemp("serve")
    table = pq.read_table(input_files(funnel_root / "dt=2024-01-01")[0]).slice(0, 12)
    hist = table.column("hist_item_id").to_pylist()
    hist = [[900 + i, 901, 902][: i % 4] + h for i, h in enumerate(hist)]
    hist[1] = []
    table = table.set_column(table.schema.get_field_index("hist_item_id"), "hist_item_id",
                             pa.array(hist, pa.list_(pa.int64())))
    price = table.column("price").to_pylist()
    price[2] = float("nan")
    table = table.set_column(table.schema.get_field_index("price"), "price", pa.array(price, pa.float32()))
    rows_file = base / "rows.parquet"
    pq.write_table(table, rows_file)
    schema = _schema()
    specs = {name: {"dtype": "float32" if name in ("price", "item_hist_ctr") else ("string" if name == "scene" else "int64"),
                    "shape": [None, 4] if name == "hist_item_id" else [None]} for name in INPUTS}
    warmup = batch_inputs(table.slice(0, 3).to_batches()[0], specs, schema)
    first = _export(base / "export", 1, warmup)
    second = _export(base / "other", 2, warmup)
    return first.parent, second, rows_file


def _instances(rows_file):
    """The file's rows as a REST client sends them: id lists padded with -1 to the longest."""
    rows = pq.read_table(rows_file).select(INPUTS).to_pylist()
    longest = max(len(r["hist_item_id"]) for r in rows)
    return [dict(r, hist_item_id=r["hist_item_id"] + [-1] * (longest - len(r["hist_item_id"]))) for r in rows]


def _call(url, body=None, method=None, raw=None):
    """(HTTP status, JSON answer) of one request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method or ("GET" if data is None else "POST"))
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def server(exports):
    from mtlrec.training.serving.model_server import ModelServer

    root, _, _ = exports
    running = ModelServer(root, port=0, max_body_mb=0.05, batch_wait_ms=2.0)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def predicted(exports, tmp_path_factory):
    """``mtlrec predict`` on the rows: {output: array}."""
    root, _, rows_file = exports
    out = tmp_path_factory.mktemp("predicted") / "scores.parquet"
    assert predict_file(root, rows_file, out) == 12
    table = pq.read_table(out)
    assert table.column("impression_id").to_pylist() == pq.read_table(rows_file).column("impression_id").to_pylist()
    return {name: np.asarray(table.column(name)) for name in ("ctr", "cvr", "ctcvr")}


def test_row_and_columnar_forms_answer_as_mtlrec_predict(server, exports, predicted):
    _, _, rows_file = exports
    instances = _instances(rows_file)
    assert max(len(r["hist_item_id"]) for r in instances) > 4 and math.isnan(instances[2]["price"])

    status, answer = _call(server.url + ":predict", {"instances": instances})
    assert status == 200 and list(answer) == ["predictions"] and len(answer["predictions"]) == 12
    for name, expected in predicted.items():
        np.testing.assert_allclose([p[name] for p in answer["predictions"]], expected, atol=1e-6, err_msg=name)

    columns = {name: [r[name] for r in instances] for name in INPUTS}
    status, answer = _call(server.url + ":predict", {"signature_name": "serving_default", "inputs": columns})
    assert status == 200 and set(answer["outputs"]) == {"ctr", "cvr", "ctcvr"}
    for name, expected in predicted.items():
        np.testing.assert_allclose(answer["outputs"][name], expected, atol=1e-6, err_msg=name)

    # one row per request, sent at once: each history only as long as its own items,
    # scene in TF Serving's binary form; the server batches them and splits the answers
    import base64

    singles = [dict(r, hist_item_id=[v for v in r["hist_item_id"] if v != -1]) for r in instances]
    singles[0]["scene"] = {"b64": base64.b64encode(singles[0]["scene"].encode()).decode()}
    answers = [None] * len(singles)

    def send(i):
        answers[i] = _call(server.url + "/versions/1:predict", {"instances": [singles[i]]})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(singles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [a[0] for a in answers] == [200] * 12
    for name, expected in predicted.items():
        np.testing.assert_allclose([a[1]["predictions"][0][name] for a in answers], expected, atol=1e-6, err_msg=name)


def test_concurrent_requests_share_one_model_call():
    from mtlrec.training.serving.request_batcher import RequestBatcher
    from mtlrec.training.serving.request_parsing import InputSpec, PredictRequest

    class Version:
        """Adds 1 to each row's ids (padded -1 stays -1); the first call waits for `release`."""

        inputs = {"serving_default": {"ids": InputSpec("ids", "int64", 2, None, -1)}}

        def __init__(self):
            self.calls, self.release = [], threading.Event()

        def call(self, signature, arrays):
            self.calls.append(arrays["ids"].copy())
            if len(self.calls) == 1:
                assert self.release.wait(30)
            ids = arrays["ids"]
            return {"out": np.where(ids >= 0, ids + 1, ids)}

    async def scenario():
        version = Version()
        batcher = RequestBatcher(max_rows=4, wait_ms=0)
        batcher.start()

        def request(*rows):
            return PredictRequest("serving_default", False, {"ids": np.array(rows, np.int64)}, len(rows))

        first = asyncio.ensure_future(batcher.predict(version, request([1])))
        while not version.calls:  # the first call is running (and waits)
            await asyncio.sleep(0.001)
        queued = [asyncio.ensure_future(batcher.predict(version, r))
                  for r in (request([2, 3]), request([4], [5]), request([6, 7, 8]), request([9]))]
        await asyncio.sleep(0.05)
        version.release.set()
        results = [await first] + [await q for q in queued]
        await batcher.stop()
        return version.calls, results

    calls, results = asyncio.run(scenario())
    # the requests queued while the first call ran: 1 + 2 + 1 rows make one call of
    # max_rows 4, id lists padded with -1 to the longest; the fifth row waits for the next
    assert len(calls) == 3
    np.testing.assert_array_equal(calls[1], [[2, 3, -1], [4, -1, -1], [5, -1, -1], [6, 7, 8]])
    np.testing.assert_array_equal(calls[2], [[9]])
    expected = [[[2]], [[3, 4, -1]], [[5, -1, -1], [6, -1, -1]], [[7, 8, 9]], [[10]]]
    for result, want in zip(results, expected):
        np.testing.assert_array_equal(result["out"], want)


def test_a_new_version_is_served_while_requests_keep_coming(exports, tmp_path, caplog):
    from mtlrec.training.serving.model_server import ModelServer

    first_root, second, rows_file = exports
    root = tmp_path / "export"
    shutil.copytree(first_root / "1", root / "1")
    body = {"instances": _instances(rows_file)[:2]}
    running = ModelServer(root, port=0, poll_seconds=0.1)
    url = running.start()
    answers, stop = [], threading.Event()

    def client():
        deadline = time.monotonic() + 180
        while not stop.is_set() and time.monotonic() < deadline and len(answers) < 20000:
            try:
                status, answer = _call(url + ":predict", body)
            except OSError as err:  # no answer at all: a failed request too
                status, answer = None, {"error": repr(err)}
            answers.append((status, answer.get("predictions", answer)))

    try:
        before = _call(url + ":predict", body)[1]["predictions"]
        thread = threading.Thread(target=client)
        thread.start()
        deadline = time.monotonic() + 120
        while len(answers) < 5 and thread.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # training writes version 2 as `export_model` does: aside, then renamed into place
        shutil.copytree(second, root / ".tmp-2")
        (root / ".tmp-2").rename(root / "2")
        deadline = time.monotonic() + 120
        while _call(url)[1]["model_version_status"][0] != {
                "version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        seen = len(answers)
        while len(answers) < seen + 5 and thread.is_alive():
            time.sleep(0.01)
        stop.set()
        thread.join(timeout=60)
        after = _call(url + ":predict", body)[1]["predictions"]
        assert abs(before[0]["ctr"] - after[0]["ctr"]) > 1e-4  # another model answers

        assert [s for s, _ in answers] == [200] * len(answers)
        which = [0 if abs(a[0]["ctr"] - before[0]["ctr"]) < 1e-6 else 1 for _, a in answers]
        assert all(abs(a[0]["ctr"] - (before, after)[w][0]["ctr"]) < 1e-6 for w, (_, a) in zip(which, answers))
        assert which[0] == 0 and which[-1] == 1 and which == sorted(which)  # switched once, for good
        assert _call(url)[1] == {"model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
            {"version": "1", "state": "END", "status": {"error_code": "OK", "error_message": ""}},
        ]}

        # a version that does not load: logged in one line, version 2 keeps answering
        (root / ".tmp-3").mkdir()
        (root / ".tmp-3" / "saved_model.pb").write_bytes(b"not a SavedModel")
        with caplog.at_level("WARNING", logger="mtlrec.serve"):
            (root / ".tmp-3").rename(root / "3")
            deadline = time.monotonic() + 60
            while not _call(url + "/versions/3")[0] == 200 or \
                    _call(url + "/versions/3")[1]["model_version_status"][0]["state"] != "END":
                assert time.monotonic() < deadline
                time.sleep(0.05)
        status = _call(url + "/versions/3")[1]["model_version_status"][0]
        assert status["status"]["error_code"] == "UNKNOWN" and status["status"]["error_message"]
        lines = [r.getMessage() for r in caplog.records if r.name == "mtlrec.serve" and r.levelname == "WARNING"]
        assert len(lines) == 1 and "version 3" in lines[0] and "still serving version 2" in lines[0]
        assert _call(url + ":predict", body) == (200, {"predictions": after})
        assert _call(url + "/versions/3:predict", body)[0] == 404
    finally:
        stop.set()
        running.stop()


# (path suffix, body or raw bytes, HTTP status, words the error must hold)
ROW = {"user_id": 17, "item_id": 4, "scene": "search", "price": 12.5, "item_hist_ctr": 0.1, "hist_item_id": [4, 8, 15]}
BAD = [
    (":predict", {"instances": [dict(ROW, usr_id=3)]}, 400, ["usr_id", "not an input", "user_id"]),
    (":predict", {"instances": [{k: v for k, v in ROW.items() if k != "price"}]}, 400, ["price", "missing at row 0", "a number (float32)"]),
    (":predict", {"inputs": {k: [v] for k, v in ROW.items() if k != "scene"}}, 400, ["scene", "missing from inputs"]),
    (":predict", {"instances": [ROW, dict(ROW, user_id="17")]}, 400, ['user_id', 'an integer (int64)', '"17" at row 1']),
    (":predict", {"instances": [dict(ROW, user_id=17.5)]}, 400, ["user_id", "an integer (int64)", "17.5"]),
    (":predict", {"instances": [dict(ROW, user_id=2**70)]}, 400, ["user_id", "within [-9223372036854775808"]),
    (":predict", {"instances": [dict(ROW, scene=3)]}, 400, ["scene", "a string", 'send it as "3"']),
    (":predict", {"instances": [dict(ROW, price=None)]}, 400, ["price", "a number (float32)", "null"]),
    (":predict", {"instances": [dict(ROW, price=True)]}, 400, ["price", "a number (float32)", "true"]),
    (":predict", {"instances": [dict(ROW, user_id=[17])]}, 400, ["user_id", "[17] at row 0"]),
    (":predict", {"instances": [dict(ROW, hist_item_id=4)]}, 400, ["hist_item_id", "a list of integers (int64)"]),
    (":predict", {"instances": [dict(ROW, hist_item_id=[4, "8"])]}, 400, ["hist_item_id", '"8" at row 0']),
    (":predict", {"instances": [ROW, dict(ROW, hist_item_id=[4])]}, 400, ["hist_item_id", "rows of different lengths", "-1"]),
    (":predict", {"inputs": dict({k: [v, v] for k, v in ROW.items()}, hist_item_id=[[1, 2], [3]])}, 400,
     ["hist_item_id", "rows of different lengths"]),
    (":predict", {"inputs": dict({k: [v] for k, v in ROW.items()}, user_id=17)}, 400, ["user_id", "non-empty list"]),
    (":predict", {"instances": [dict(ROW, scene={"b64": "%%%"})]}, 400, ["scene", "base64"]),
    (":predict", {"instances": []}, 400, ["instances", "non-empty list"]),
    (":predict", {"instances": [ROW], "inputs": {}}, 400, ['"instances"', '"inputs"', "both"]),
    (":predict", {"rows": [ROW]}, 400, ['"instances"', "['rows']"]),
    (":predict", [ROW], 400, ["JSON object"]),
    (":predict", b'{"instances": [', 400, ["JSON Parse error"]),
    (":predict", b"\xff\xfe{", 400, ["JSON Parse error"]),
    (":predict", {"signature_name": "score", "instances": [ROW]}, 400, ['"score" not found', "serving_default"]),
    (":predict", {"instances": [ROW] * 800}, 400, ["too large", "--max-body-mb"]),
    (":classify", {"instances": [ROW]}, 400, ["classify", ":predict"]),
    ("/versions/x:predict", {"instances": [ROW]}, 400, ["version", "'x'"]),
    ("/versions/9:predict", {"instances": [ROW]}, 404, ["Specific(tiny_esmm, 9)", "version 1"]),
    ("/versions/9", None, 404, ["version 9 of model tiny_esmm"]),
]


def test_every_bad_request_gets_tf_servings_error_naming_what_was_expected(server):
    # one test for all cases: each test's teardown clears the Keras session (about 1 s)
    for path, body, status, words in BAD:
        raw = body if isinstance(body, bytes) else None
        got, answer = _call(server.url + path, None if raw else body, raw=raw)
        assert got == status and list(answer) == ["error"], (path, body, answer)
        for word in words:
            assert word in answer["error"], (word, answer["error"])
    assert _call(server.url + ":predict", {"instances": [ROW]})[0] == 200  # still serving


def test_unknown_models_and_paths_get_404(server):
    base = server.url.rsplit("/", 1)[0]
    status, answer = _call(base + "/half_plus_two:predict", {"instances": [ROW]})
    assert status == 404 and answer["error"].startswith("Servable not found for request: Latest(half_plus_two)")
    status, answer = _call(base + "/half_plus_two")
    assert status == 404 and "Could not find any versions of model half_plus_two" in answer["error"]
    status, answer = _call(server.url.split("/v1/")[0] + "/v2/models/tiny_esmm")
    assert status == 404 and "/v2/models/tiny_esmm" in answer["error"]
    assert _call(server.url + ":predict")[0] == 405


def test_status_and_metadata_answer_as_tf_serving(server):
    available = {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert _call(server.url) == (200, available)
    assert _call(server.url + "/versions/1") == (200, available)
    status, meta = _call(server.url + "/metadata")
    assert status == 200 and meta["model_spec"] == {"name": "tiny_esmm", "signature_name": "", "version": "1"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sorted(signature["inputs"]) == INPUTS and sorted(signature["outputs"]) == ["ctcvr", "ctr", "cvr"]
    assert signature["inputs"]["user_id"]["dtype"] == "DT_INT64"
    assert signature["inputs"]["scene"]["dtype"] == "DT_STRING"
    assert [d["size"] for d in signature["inputs"]["hist_item_id"]["tensor_shape"]["dim"]] == ["-1", "-1"]


def test_a_version_directory_is_served_as_it_is(exports):
    from mtlrec.training.serving.model_server import ModelServer

    root, _, rows_file = exports
    running = ModelServer(root / "1", port=0, name="pinned")
    url = running.start()
    try:
        assert url.endswith("/v1/models/pinned") and running.versions.fixed
        assert _call(url)[1]["model_version_status"][0]["version"] == "1"
        assert _call(url + "/versions/1:predict", {"instances": _instances(rows_file)[:1]})[0] == 200
    finally:
        running.stop()


def test_serve_command_line_errors_exit_2(server, tmp_path, capsys):
    from mtlrec.cli import main

    assert main(["serve", "--model", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing: no such directory" in err[0], err
    (tmp_path / "empty").mkdir()
    assert main(["serve", "--model", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no export versions in it" in err[0], err
    port = int(server.url.split(":")[2].split("/")[0])
    assert main(["serve", "--model", str(server.versions.path), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # refused before the model loads
    assert len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0] and "in use" in err[0], err


def test_serve_command_answers_until_sigterm(exports, predicted):
    root, _, rows_file = exports
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtlrec.cli", "serve", "--model", str(root), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=str(REPO),
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving tiny_esmm version 1 ("), (line, proc.stderr.read() if proc.poll() else "")
        url = line.split(" at ")[-1].strip()
        status, answer = _call(url + ":predict", {"instances": _instances(rows_file)})
        assert status == 200
        np.testing.assert_allclose([p["ctr"] for p in answer["predictions"]], predicted["ctr"], atol=1e-6)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_signature_name_serves_dupns_user_and_candidate_signatures(funnel_root, tmp_path):
    """One user's representation, then 6 candidates scored against it (broadcast: the
    inputs' row counts differ, so the request runs on its own), equal the full rows."""
    from mtlrec.data_pipeline import funnel_schema_dict
    from mtlrec.models import build_model
    from mtlrec.training.serving.model_server import ModelServer

    schema = funnel_schema_dict(num_users=60, num_items=50, max_len=4, dim=4, property_dim=4)
    model = build_model({"type": "dupn", "lstm_units": 8, "attention_units": 8, "representation_dim": 8,
                         "tower_units": [8], "seed": 3}, schema, [{"name": "ctr", "label": "click"}])
    export_model(model, tmp_path / "export", metadata={"schema": schema, "name": "dupn"})
    running = ModelServer(tmp_path / "export", port=0)
    url = running.start()
    try:
        inputs = running.versions.current.inputs
        table = pq.read_table(input_files(funnel_root / "dt=2024-01-01")[0]).slice(0, 6)
        rows = table.select(sorted(inputs["serving_default"])).to_pylist()
        for row in rows:  # the same user beside each candidate; histories of one length
            row.update({k: (rows[0][k] + [-1] * 20)[:20] if inputs["serving_default"][k].rank == 2 else rows[0][k]
                        for k in inputs["user_representation"]})
        full = _call(url + ":predict", {"instances": rows})
        user = {k: [rows[0][k]] for k in inputs["user_representation"]}
        status, rep = _call(url + ":predict", {"signature_name": "user_representation", "inputs": user})
        assert status == 200 and np.shape(rep["outputs"]) == (1, 8)
        candidates = {k: [r[k] for r in rows] for k in inputs["score_items"] if k != "representation"}
        status, scored = _call(url + ":predict", {"signature_name": "score_items",
                                                  "inputs": dict(candidates, representation=rep["outputs"])})
        assert status == 200 and full[0] == 200
        # one output (ctr): the list alone in both forms (TF Serving's rule)
        assert len(full[1]["predictions"]) == 6 and all(type(p) is float for p in full[1]["predictions"])
        np.testing.assert_allclose(scored["outputs"], full[1]["predictions"], atol=1e-6)
    finally:
        running.stop()
