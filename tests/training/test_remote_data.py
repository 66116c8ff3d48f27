"""data.root on an S3-compatible server (moto's server mode on 127.0.0.1, started here):
days listed, validated, read, trained (`mtlrec train` in a fresh process) and evaluated; a
missing bucket, refused credentials and an unreachable endpoint stop the CLI with one line
and leave no run directory."""

import json
import logging
import socket

import numpy as np
import pytest

moto_server = pytest.importorskip("moto.server")

BUCKET = "mtlrec-days"
PREFIX = "funnel/days"
LISTER = {}  # credentials of a user who may list the bucket but not read its objects (set by `s3`)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3(funnel_root):
    """A moto S3 server on 127.0.0.1 that checks credentials, holding the tiny funnel days
    under s3://BUCKET/PREFIX. Yields the environment a client needs (endpoint, keys)."""
    import boto3
    import pyarrow.fs as pafs
    import requests

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        keys = {}
        # lister: no GetObject. "s3:List*" rather than AWS's "s3:ListBucket" alone: moto 5.2.6
        # refuses ListObjectsV2 to a user granted only s3:ListBucket (5.2.5 allowed it)
        for user, action in (("reader", "s3:*"), ("lister", "s3:List*")):
            iam.create_user(UserName=user)
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]}
            iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
            keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
        # from now on every request must be signed by a known key
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0").raise_for_status()
        env = {
            "AWS_ACCESS_KEY_ID": keys["reader"]["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": keys["reader"]["SecretAccessKey"],
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        LISTER.update(AWS_ACCESS_KEY_ID=keys["lister"]["AccessKeyId"],
                      AWS_SECRET_ACCESS_KEY=keys["lister"]["SecretAccessKey"])
        fs = pafs.S3FileSystem(access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
                               endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                               allow_bucket_creation=True)
        fs.create_dir(BUCKET)
        pafs.copy_files(str(funnel_root), f"{BUCKET}/{PREFIX}", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)
        yield env
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    """This process's environment pointed at the server (for in-process reads)."""
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    return s3


@pytest.fixture
def schema(tmp_path, make_config, funnel_root):
    from mtlrec.training.config import load_config

    return load_config(make_config(tmp_path, funnel_root)).schema


def test_days_are_listed_validated_and_read_as_from_the_local_root(s3_env, funnel_root, tiny, schema):
    from mtlrec.data_pipeline import list_days, make_dataset, validate_day

    days = tiny.days
    endpoint = s3_env["AWS_ENDPOINT_URL"].removeprefix("http://")
    root = f"s3://{BUCKET}/{PREFIX}?endpoint_override={endpoint}&scheme=http"  # the endpoint in the URI
    assert list_days(root) == days
    assert list_days(f"s3://{BUCKET}/nothing-here?endpoint_override={endpoint}&scheme=http") == []
    id_counts, local_ids = {}, {}
    assert validate_day(root, days[1], schema, id_counts=id_counts) == tiny.rows
    validate_day(funnel_root, days[1], schema, id_counts=local_ids)
    assert id_counts == local_ids and id_counts
    remote = list(make_dataset(root, days[1], schema, batch_size=100, deterministic=True,
                               extra_columns=("true_ctr",)))
    local = list(make_dataset(funnel_root, days[1], schema, batch_size=100, deterministic=True,
                              extra_columns=("true_ctr",)))
    assert [len(b[1]["click"]) for b in remote] == [100, 100, 100, 20]
    for (rf, rl), (lf, ll) in zip(remote, local):
        for name in lf:
            np.testing.assert_array_equal(rf[name].numpy(), lf[name].numpy())
        for name in ll:
            np.testing.assert_array_equal(rl[name].numpy(), ll[name].numpy())


def test_a_missing_day_names_its_uri(s3_env, tiny):
    from mtlrec.data_pipeline import DataValidationError, select_days

    root = f"s3://{BUCKET}/{PREFIX}"
    with pytest.raises(DataValidationError) as info:
        select_days(root, day="2024-02-01")
    assert str(info.value) == (
        f"file {root}/dt=2024-02-01: day 2024-02-01 missing (days present: {', '.join(tiny.days)})"
    )


def test_tfrecord_under_s3_is_refused_by_the_reader(s3_env, tiny, schema):
    from mtlrec.data_pipeline import make_dataset

    with pytest.raises(ValueError) as info:
        make_dataset(f"s3://{BUCKET}/{PREFIX}", tiny.days[0], schema, fmt="tfrecord")
    assert str(info.value).startswith(
        f"cannot read TFRecord files under s3://{BUCKET}/{PREFIX}: TensorFlow 2.21.0 reads TFRecord files only "
        "from local paths and file://, gs://, ram://"
    )


def test_train_and_evaluate_from_s3_match_the_local_root(s3_env, tmp_path, make_config, funnel_root, tiny, cli,
                                                         capsys):
    """`mtlrec train` in a fresh process reading s3://, `mtlrec evaluate` here; the same
    commands on the local copy of the days give the same metrics."""
    from mtlrec.cli import main

    first, second = tiny.days[:2]
    trained = f"trained {first}: {tiny.steps_per_day} steps (global step {tiny.steps_per_day})"
    metrics = {}
    for name, root in (("remote", f"s3://{BUCKET}/{PREFIX}"), ("local", funnel_root)):
        (tmp_path / name).mkdir()
        path = make_config(tmp_path / name, root)
        if name == "remote":
            code, out, err = cli("train", path, "--day", first, env=s3_env)
            assert code == 0, err
            assert trained in out
        else:
            assert main(["train", str(path), "--day", first]) == 0
            assert trained in capsys.readouterr().out
        assert main(["evaluate", str(path), "--day", second, "--json"]) == 0
        metrics[name] = json.loads(capsys.readouterr().out)["metrics"]
    assert set(metrics["remote"]) == {"ctr", "cvr", "ctcvr"}
    assert metrics["remote"] == metrics["local"]


def _mtlrec_lines(err):
    """What mtlrec printed to stderr (TensorFlow's C++ start-up logs aside), no traceback."""
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("mtlrec")]


def _stopped_with_one_line(tmp_path, make_config, root, capsys, code, line):
    from mtlrec.cli import main

    path = make_config(tmp_path, root)
    assert main(["train", str(path), "--day", "2024-01-01"]) == code
    assert _mtlrec_lines(capsys.readouterr().err) == [line]
    assert not (tmp_path / "run").exists()


def test_a_missing_bucket_stops_with_one_line(s3_env, tmp_path, make_config, capsys):
    _stopped_with_one_line(
        tmp_path, make_config, "s3://no-such-bucket/days", capsys, 1,
        "mtlrec: error: file s3://no-such-bucket/days: cannot read the s3:// storage: When listing objects under "
        "key 'days/' in bucket 'no-such-bucket': AWS Error NO_SUCH_BUCKET during ListObjectsV2 operation: "
        "The specified bucket does not exist",
    )


def test_refused_credentials_stop_with_one_line(s3_env, tmp_path, make_config, capsys, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    _stopped_with_one_line(
        tmp_path, make_config, f"s3://{BUCKET}/{PREFIX}", capsys, 1,
        f"mtlrec: error: file s3://{BUCKET}/{PREFIX}: cannot read the s3:// storage: When listing objects under "
        f"key '{PREFIX}/' in bucket '{BUCKET}': AWS Error SIGNATURE_DOES_NOT_MATCH during ListObjectsV2 operation: "
        "The request signature we calculated does not match the signature you provided. Check your key and "
        "signing method.; check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN "
        "or AWS_PROFILE)",
    )


def test_objects_that_may_be_listed_but_not_read_stop_with_one_line(s3_env, tiny, schema, monkeypatch):
    from mtlrec.data_pipeline import DataValidationError, validate_day

    for name, value in LISTER.items():
        monkeypatch.setenv(name, value)
    key = f"{PREFIX}/dt={tiny.days[0]}/part-00000.parquet"
    with pytest.raises(DataValidationError) as info:
        validate_day(f"s3://{BUCKET}/{PREFIX}", tiny.days[0], schema)
    assert str(info.value) == (
        f"file s3://{BUCKET}/{key}: cannot read the s3:// storage: When reading information for key '{key}' in "
        f"bucket '{BUCKET}': AWS Error ACCESS_DENIED during HeadObject operation: No response body.; check the "
        "credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or AWS_PROFILE)"
    )


def test_an_unreachable_endpoint_stops_with_one_line(s3_env, tmp_path, make_config, capsys):
    from mtlrec.cli import main

    root = f"s3://{BUCKET}/{PREFIX}?endpoint_override=127.0.0.1:{_free_port()}&scheme=http"  # nobody listens
    path = make_config(tmp_path, root)
    assert main(["train", str(path), "--day", "2024-01-01"]) == 1
    (line,) = _mtlrec_lines(capsys.readouterr().err)
    assert line.startswith(
        f"mtlrec: error: file {root}: cannot read the s3:// storage: When listing objects under key "
        f"'{PREFIX}/' in bucket '{BUCKET}': AWS Error NETWORK_CONNECTION during ListObjectsV2 operation: "
        "curlCode: 7, Could not connect to server"
    ), line
    assert not (tmp_path / "run").exists()


def test_an_unknown_scheme_is_a_config_error(tmp_path, make_config, capsys):
    path = make_config(tmp_path, "ftp://example/days")
    _stopped_with_one_line(
        tmp_path, make_config, "ftp://example/days", capsys, 2,
        f"mtlrec: error: {path}:3: data.root: expected a local path or a URI that pyarrow.fs reads "
        "(s3://, gs://, hdfs://, ...), got the unknown scheme 'ftp' in 'ftp://example/days'",
    )


def test_hourly_partitions_are_listed_with_their_marker_and_read_from_s3(s3_env, funnel_root, tiny, schema):
    import pyarrow.fs as pafs

    from mtlrec.data_pipeline import validate_day
    from mtlrec.training.follow.directory_source import DirectorySource

    endpoint = s3_env["AWS_ENDPOINT_URL"].removeprefix("http://")
    fs = pafs.S3FileSystem(access_key=s3_env["AWS_ACCESS_KEY_ID"], secret_key=s3_env["AWS_SECRET_ACCESS_KEY"],
                           endpoint_override=endpoint, scheme="http", region="us-east-1")
    for hour, day in enumerate(tiny.days[:2]):
        pafs.copy_files(str(funnel_root / f"dt={day}"), f"{BUCKET}/hours/dt=2030-01-01/hour={hour:02d}",
                        source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    with fs.open_output_stream(f"{BUCKET}/hours/dt=2030-01-01/hour=00/_SUCCESS") as f:
        f.write(b"")
    root = f"s3://{BUCKET}/hours"
    source = DirectorySource(root, "parquet", "_SUCCESS")
    complete = source.complete("2030-01-01T00")
    assert [p.key for p in complete] == ["2030-01-01T00"]  # hour 01 has no marker yet
    assert complete[0].ready_at > 0 and source.get("2030-01-01T00").fingerprint == complete[0].fingerprint
    assert [p.key for p in DirectorySource(root, "parquet", None).complete("2030-01-01T00")] == [
        "2030-01-01T00", "2030-01-01T01",
    ]
    assert validate_day(root, "2030-01-01T01", schema) == tiny.rows
