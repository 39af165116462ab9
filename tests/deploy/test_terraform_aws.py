"""The AWS Terraform (terraform/modules/aws and terraform/examples/aws):

- `terraform fmt -check` on the whole terraform/ tree;
- `terraform validate` of the module and the example, with the offline provider mirror;
- the module's own `terraform test` suite (mocked provider: input validations, conditional
  resources, the policies' statements);
- checkov (offline): no failed check, and the skips are exactly the reviewed ones, each with
  its reason next to the resource;
- a real `terraform apply` of the example against moto server, with the zips
  scripts/package.sh leaves in dist/lambda, read back through the AWS API with boto3 (query's
  Function URL and its resource policy included); then a second plan that changes nothing
  but moto's known quirks; then `terraform destroy`, after which nothing is left.

Everything runs on copies in temporary directories, so no .terraform, lock file or state
lands in the repository. The apply starts in the background when the session starts (it
spends most of its time in the AWS provider's propagation waits) and the static checks run
meanwhile.
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
MODULE = TERRAFORM / "modules" / "aws"
EXAMPLE = TERRAFORM / "examples" / "aws"
PACKAGE_DIR = ROOT / "dist" / "lambda"

FUNCTIONS = ["ingest", "transform", "rollup", "fanout", "query"]
QUEUE_FUNCTIONS = ["ingest", "transform", "fanout"]
SCHEDULED_FUNCTIONS = ["rollup", "fanout"]
NUDGING_FUNCTIONS = ["ingest", "transform", "rollup"]
# Behind a public Function URL; the only function with a resource policy.
HTTP_FUNCTIONS = ["query"]

PREFIX = "ferrytest"
REGION = "us-east-1"
# What the database secret holds in the apply test: nothing of it may reach a function's
# configuration.
SECRET_PASSWORD = "n0t-in-any-env-7f3a"
SECRET_STRING = f"postgres://ferry:{SECRET_PASSWORD}@db.internal:5432/ferry"
# What the webhook keyring secret holds: a key made for this run (as `ferry secrets new-key`
# makes one), of which nothing may reach a function's configuration either.
KEYRING_KEY = base64.b64encode(os.urandom(32)).decode()
KEYRING = f"k1:{KEYRING_KEY}"
KEYRING_FUNCTIONS = ["fanout"]
# The browser origins the apply gives the query API (FERRY_QUERY_CORS_ORIGINS, query only).
QUERY_CORS_ORIGINS = ["https://shop.example", "http://localhost:5173"]

# The module's defaults, which the example does not override.
TIMEOUTS = {"ingest": 60, "transform": 900, "rollup": 300, "fanout": 120, "query": 30}
MAX_CONCURRENCY = {"ingest": 5, "transform": 2, "fanout": 2}
BATCH_SIZE = {"ingest": 10, "transform": 3, "fanout": 10}
RESERVED = {"rollup": 1, "fanout": 3, "query": 10}
MAX_RECEIVE_COUNT = 5
LOG_RETENTION_DAYS = 30

# Reviewed checkov skips (each also carries its reason inline); a new one must be added here
# and to terraform/README.md.
EXPECTED_SKIPS = {
    "module": {
        ("CKV_AWS_158", "aws_cloudwatch_log_group.fn"),
        ("CKV_AWS_338", "aws_cloudwatch_log_group.fn"),
        ("CKV_AWS_116", "aws_lambda_function.fn"),
        ("CKV_AWS_173", "aws_lambda_function.fn"),
        ("CKV_AWS_272", "aws_lambda_function.fn"),
        ("CKV_AWS_50", "aws_lambda_function.fn"),
        ("CKV_AWS_297", 'aws_scheduler_schedule.fn["rollup"]'),
        ("CKV_AWS_297", 'aws_scheduler_schedule.fn["fanout"]'),
        ("CKV_AWS_18", "aws_s3_bucket.batches"),
        ("CKV_AWS_144", "aws_s3_bucket.batches"),
        ("CKV_AWS_145", "aws_s3_bucket.batches"),
        ("CKV_AWS_258", "aws_lambda_function_url.query"),
    },
}
EXPECTED_SKIPS["example"] = {(c, f"module.ferry.{r}") for c, r in EXPECTED_SKIPS["module"]} | {
    ("CKV2_AWS_30", "aws_db_instance.ferry"),
}

APPLY_TEST = "test_example_applies_against_moto_and_destroys_cleanly"


def run(cmd, cwd: Path, env: dict | None = None, ok=(0,)) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    if proc.returncode not in ok:
        pytest.fail(
            f"{' '.join(map(str, cmd))} (in {cwd}) exited {proc.returncode}\n"
            f"--- stdout (tail)\n{proc.stdout[-6000:]}\n--- stderr (tail)\n{proc.stderr[-6000:]}"
        )
    return proc


def copy_terraform_tree(dest: Path) -> Path:
    """terraform/ without local Terraform state, so relative module sources still resolve."""
    target = dest / "terraform"
    shutil.copytree(
        TERRAFORM,
        target,
        ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfstate*", "*.tfplan"),
    )
    return target


def init(terraform_bin: str, plugin_dir: Path, cwd: Path, env: dict):
    run([terraform_bin, "init", "-backend=false", f"-plugin-dir={plugin_dir}", "-input=false", "-no-color"], cwd, env)


def package_zips() -> dict:
    zips = {fn: PACKAGE_DIR / f"{fn}.zip" for fn in FUNCTIONS}
    missing = [str(z.relative_to(ROOT)) for z in zips.values() if not z.is_file()]
    return {"zips": zips, "missing": missing}


# --- the apply against moto, started early -------------------------------------------------


class Deployment:
    """The example applied to moto: init + apply in a background thread, then the test."""

    def __init__(self, terraform_bin, plugin_dir, env, moto_url, workdir: Path):
        self.terraform_bin = terraform_bin
        self.plugin_dir = plugin_dir
        self.env = env
        self.moto_url = moto_url
        self.workdir = workdir
        self.dir = None
        self.secret_arn = None
        self.keys_arn = None
        self.error = None
        self.proc = None
        self._thread = threading.Thread(target=self._apply, daemon=True)

    def client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def start(self):
        self._thread.start()

    def tf(self, *args, ok=(0,)) -> subprocess.CompletedProcess:
        cmd = [self.terraform_bin, *args]
        self.proc = subprocess.Popen(cmd, cwd=self.dir, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout, stderr = self.proc.communicate(timeout=900)
        if self.proc.returncode not in ok:
            pytest.fail(
                f"{' '.join(cmd)} exited {self.proc.returncode}\n"
                f"--- stdout (tail)\n{stdout[-6000:]}\n--- stderr (tail)\n{stderr[-6000:]}"
            )
        return subprocess.CompletedProcess(cmd, self.proc.returncode, stdout, stderr)

    def stop(self):
        """Ends a terraform still running when the tests end early (e.g. pytest -x)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def _apply(self):
        try:
            self.dir = copy_terraform_tree(self.workdir) / "examples" / "aws"
            # The database secret exists before the deployment, as it would in a real account.
            self.secret_arn = self.client("secretsmanager").create_secret(
                Name=f"{PREFIX}/database", SecretString=SECRET_STRING
            )["ARN"]
            # So does the webhook keyring's (the example takes it; it never creates it).
            self.keys_arn = self.client("secretsmanager").create_secret(
                Name=f"{PREFIX}/webhook-keys", SecretString=KEYRING
            )["ARN"]
            (self.dir / "moto.auto.tfvars.json").write_text(
                json.dumps(
                    {
                        "region": REGION,
                        "name_prefix": PREFIX,
                        "package_dir": str(PACKAGE_DIR),
                        "database_secret_arn": self.secret_arn,
                        "webhook_keys_secret_arn": self.keys_arn,
                        "query_cors_origins": QUERY_CORS_ORIGINS,
                        "aws_endpoint_url": self.moto_url,
                    }
                )
            )
            self.tf("init", "-backend=false", f"-plugin-dir={self.plugin_dir}", "-input=false", "-no-color")
            self.tf("apply", "-auto-approve", "-input=false", "-no-color")
        except BaseException as e:  # pytest.fail raises a BaseException
            self.error = e

    def wait_applied(self):
        self._thread.join()
        if self.error is not None:
            raise self.error


@pytest.fixture(scope="module")
def deployment(request, terraform_bin, tf_plugin_dir, terraform_env, tmp_path_factory):
    """Started by the autouse fixture below when the apply test is selected."""
    missing = package_zips()["missing"]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run scripts/package.sh first")
    moto_url = request.getfixturevalue("moto_server")
    d = Deployment(terraform_bin, tf_plugin_dir, terraform_env, moto_url, tmp_path_factory.mktemp("apply"))
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module", autouse=True)
def _start_apply_early(request):
    if any(item.name == APPLY_TEST for item in request.session.items):
        try:
            request.getfixturevalue("deployment")
        except pytest.fail.Exception:
            pass  # pytest keeps the failure; the apply test reports it, the static ones run


# --- static checks --------------------------------------------------------------------------


def test_terraform_fmt_check_passes_on_the_whole_tree(terraform_bin, terraform_env):
    proc = run([terraform_bin, "fmt", "-check", "-recursive", "-diff", "-no-color", TERRAFORM], ROOT, terraform_env, ok=(0, 3))
    assert proc.returncode == 0, f"terraform fmt would change:\n{proc.stdout}"


@pytest.mark.parametrize("which", ["module", "example"])
def test_validates_offline(which, terraform_bin, tf_plugin_dir, terraform_env, tmp_path):
    tree = copy_terraform_tree(tmp_path)
    cwd = tree / ("modules/aws" if which == "module" else "examples/aws")
    init(terraform_bin, tf_plugin_dir, cwd, terraform_env)
    proc = run([terraform_bin, "validate", "-json", "-no-color"], cwd, terraform_env)
    result = json.loads(proc.stdout)
    assert result["valid"], result
    assert result["warning_count"] == 0, result["diagnostics"]


def test_module_test_suite_passes(terraform_bin, tf_plugin_dir, terraform_env, tmp_path):
    cwd = copy_terraform_tree(tmp_path) / "modules" / "aws"
    init(terraform_bin, tf_plugin_dir, cwd, terraform_env)
    proc = run([terraform_bin, "test", "-no-color"], cwd, terraform_env, ok=(0, 1))
    assert proc.returncode == 0 and " 0 failed" in proc.stdout, proc.stdout[-8000:] + proc.stderr[-4000:]
    # Both files ran, each to a pass (a file that does not parse would run nothing).
    for name in ("resources", "validation"):
        assert f"tests/{name}.tftest.hcl... pass" in proc.stdout, proc.stdout
    assert proc.stdout.count("... pass") >= 25 and "... fail" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("which", ["module", "example"])
def test_checkov_finds_no_failed_check_and_only_the_reviewed_skips(which, checkov_bin):
    path = MODULE if which == "module" else EXAMPLE
    proc = subprocess.run(
        [checkov_bin, "-d", path, "--framework", "terraform", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    results = json.loads(proc.stdout)["results"]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in results["failed_checks"]]
    assert failed == []
    assert results["passed_checks"], "checkov checked nothing"
    skipped = results["skipped_checks"]
    assert {(c["check_id"], c["resource"]) for c in skipped} == EXPECTED_SKIPS[which]
    for c in skipped:
        assert len(c["check_result"].get("suppress_comment", "").strip()) > 20, c


def test_no_terraform_state_or_plugin_dirs_in_the_repository():
    leftovers = [
        p.relative_to(ROOT)
        for d in (MODULE, EXAMPLE)
        for p in d.rglob("*")
        if p.name in (".terraform", ".terraform.lock.hcl", "terraform.tfstate", "terraform.tfstate.backup")
    ]
    assert leftovers == []


# --- the apply against moto -----------------------------------------------------------------


def policy_pairs(document) -> set:
    """(effect, action, resource, condition) of every statement, actions and resources flattened."""
    if isinstance(document, str):
        document = json.loads(document)
    pairs = set()
    for s in document["Statement"]:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        condition = json.dumps(s.get("Condition"), sort_keys=True) if s.get("Condition") else None
        for a in actions:
            for r in resources:
                pairs.add((s["Effect"], a, r, condition))
    return pairs


def changed_attributes(change: dict) -> set:
    before, after = change["before"] or {}, change["after"] or {}
    unknown = change.get("after_unknown") or {}
    return {k for k in set(before) | set(after) if before.get(k) != after.get(k) or unknown.get(k)}


def moto_quirk(rc: dict) -> bool:
    """The second plan's changes that come from moto, not the configuration.

    1. moto 5.2.5 keeps no LoggingConfig for Lambda functions, so every function reads back
       without `logging_config` and the plan adds it again.
    2. moto re-serialises a queue's RedrivePolicy with spaces (json.dumps defaults); the
       queue resource, which does not manage it (aws_sqs_queue_redrive_policy does), then
       sees a whitespace-only change of the same JSON.
    """
    change = rc["change"]
    if change["actions"] != ["update"] or rc["module_address"] != "module.ferry":
        return False
    diff = changed_attributes(change)
    if rc["type"] == "aws_lambda_function":
        after = change["after"]["logging_config"]
        return (
            diff == {"logging_config"}
            and change["before"]["logging_config"] == []
            and len(after) == 1
            and after[0]["log_format"] == "JSON"
            and after[0]["log_group"] == f"/aws/lambda/{change['before']['function_name']}"
        )
    if rc["type"] == "aws_sqs_queue" and rc["name"] == "main":
        return (
            diff == {"redrive_policy"}
            and change["before"]["redrive_policy"] != change["after"]["redrive_policy"]
            and json.loads(change["before"]["redrive_policy"]) == json.loads(change["after"]["redrive_policy"])
        )
    return False


def test_example_applies_against_moto_and_destroys_cleanly(deployment):
    deployment.wait_applied()
    d = deployment
    lam, sqs, s3, iam = d.client("lambda"), d.client("sqs"), d.client("s3"), d.client("iam")
    account = d.client("sts").get_caller_identity()["Account"]
    outputs = {k: v["value"] for k, v in json.loads(d.tf("output", "-json").stdout).items()}

    # Queues: each main queue redrives to its own DLQ after MAX_RECEIVE_COUNT receives, its
    # visibility timeout is 6 x its function's timeout, and every queue is encrypted.
    queue_url = {fn: sqs.get_queue_url(QueueName=f"{PREFIX}-{fn}")["QueueUrl"] for fn in QUEUE_FUNCTIONS}
    dlq_url = {fn: sqs.get_queue_url(QueueName=f"{PREFIX}-{fn}-dlq")["QueueUrl"] for fn in QUEUE_FUNCTIONS}
    assert outputs["queue_urls"] == queue_url
    assert outputs["dead_letter_queue_urls"] == dlq_url
    queue_arn, dlq_arn = {}, {}
    for fn in QUEUE_FUNCTIONS:
        main = sqs.get_queue_attributes(QueueUrl=queue_url[fn], AttributeNames=["All"])["Attributes"]
        dlq = sqs.get_queue_attributes(QueueUrl=dlq_url[fn], AttributeNames=["All"])["Attributes"]
        queue_arn[fn], dlq_arn[fn] = main["QueueArn"], dlq["QueueArn"]
        redrive = json.loads(main["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == dlq_arn[fn]
        assert int(redrive["maxReceiveCount"]) == MAX_RECEIVE_COUNT
        timeout = lam.get_function_configuration(FunctionName=f"{PREFIX}-{fn}")["Timeout"]
        assert timeout == TIMEOUTS[fn]
        assert int(main["VisibilityTimeout"]) >= 6 * timeout
        assert int(main["VisibilityTimeout"]) == 6 * TIMEOUTS[fn]
        assert main["SqsManagedSseEnabled"] == "true" and dlq["SqsManagedSseEnabled"] == "true"
        assert int(dlq["MessageRetentionPeriod"]) == 14 * 24 * 3600

    # The bucket announces every created object on the transform queue, which admits S3 for
    # this bucket only.
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(f"{PREFIX}-batches-")]
    assert buckets == [outputs["bucket_name"]]
    bucket = buckets[0]
    bucket_arn = f"arn:aws:s3:::{bucket}"
    notification = s3.get_bucket_notification_configuration(Bucket=bucket)
    assert [(q["QueueArn"], q["Events"]) for q in notification["QueueConfigurations"]] == [
        (queue_arn["transform"], ["s3:ObjectCreated:*"])
    ]
    assert not notification.get("LambdaFunctionConfigurations") and not notification.get("TopicConfigurations")
    queue_policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=queue_url["transform"], AttributeNames=["Policy"])["Attributes"]["Policy"]
    )
    assert [(s["Principal"], s["Action"], s["Resource"], s["Condition"]["ArnEquals"]) for s in queue_policy["Statement"]] == [
        ({"Service": "s3.amazonaws.com"}, "sqs:SendMessage", queue_arn["transform"], {"aws:SourceArn": bucket_arn})
    ]
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    sse = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert sse[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [r["NoncurrentVersionExpiration"]["NoncurrentDays"] for r in rules] == [30]

    # Functions: the packaged code, the custom runtime, the secrets' ARNs and never their
    # values; the keyring's ARN for fanout only.
    assert outputs["webhook_keys_secret_arn"] == d.keys_arn
    zips = package_zips()["zips"]
    fanout_url = queue_url["fanout"]
    for fn in FUNCTIONS:
        got = lam.get_function(FunctionName=f"{PREFIX}-{fn}")
        cfg = got["Configuration"]
        assert cfg["Runtime"] == "provided.al2023" and cfg["Handler"] == "bootstrap"
        assert cfg["Architectures"] == ["x86_64"]
        assert cfg["Role"] == f"arn:aws:iam::{account}:role/{PREFIX}-{fn}"
        assert cfg["CodeSha256"] == base64.b64encode(hashlib.sha256(zips[fn].read_bytes()).digest()).decode()
        env = cfg["Environment"]["Variables"]
        assert env["FERRY_DATABASE_SECRET_ARN"] == d.secret_arn
        assert "DATABASE_URL" not in env
        assert not [k for k, v in env.items() if SECRET_PASSWORD in v or v == SECRET_STRING]
        assert not [k for k, v in env.items() if KEYRING_KEY in v]
        assert "FERRY_WEBHOOK_KEYS" not in env
        expected_keys = (
            {"FERRY_DATABASE_SECRET_ARN"}
            | ({"FERRY_FANOUT_QUEUE_URL"} if fn in NUDGING_FUNCTIONS else set())
            | ({"FERRY_WEBHOOK_KEYS_SECRET_ARN"} if fn in KEYRING_FUNCTIONS else set())
            | ({"FERRY_QUERY_CORS_ORIGINS"} if fn in HTTP_FUNCTIONS else set())
        )
        assert set(env) == expected_keys, env
        if fn in NUDGING_FUNCTIONS:
            assert env["FERRY_FANOUT_QUEUE_URL"] == fanout_url
        if fn in KEYRING_FUNCTIONS:
            assert env["FERRY_WEBHOOK_KEYS_SECRET_ARN"] == d.keys_arn
        if fn in HTTP_FUNCTIONS:
            assert env["FERRY_QUERY_CORS_ORIGINS"] == ",".join(QUERY_CORS_ORIGINS)
        reserved = got.get("Concurrency", {}).get("ReservedConcurrentExecutions")
        assert reserved == RESERVED.get(fn), (fn, reserved)
    assert outputs["function_names"] == {fn: f"{PREFIX}-{fn}" for fn in FUNCTIONS}

    # query's Function URL: public (the function checks API keys itself), whole responses,
    # and no CORS on Lambda's side (the function answers preflights from its origins).
    url = lam.get_function_url_config(FunctionName=f"{PREFIX}-query")
    assert url["AuthType"] == "NONE"
    assert url["InvokeMode"].upper() == "BUFFERED"
    assert not url.get("Cors")
    assert url["FunctionArn"].rsplit(":", 1)[1] == f"{PREFIX}-query"
    assert outputs["query_url"] == url["FunctionUrl"].rstrip("/") + "/v1/"
    for fn in FUNCTIONS:
        if fn in HTTP_FUNCTIONS:
            continue
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_function_url_config(FunctionName=f"{PREFIX}-{fn}")

    # Its resource policy lets anyone call the URL and nothing else: the statement the provider
    # adds with the URL, and from hashicorp/aws 6.28.0 on the InvokeFunction statement limited
    # to calls through the URL. No other function has a resource policy (the schedules invoke
    # with roles of their own, the mappings with the functions' roles).
    statements = json.loads(lam.get_policy(FunctionName=f"{PREFIX}-query")["Policy"])["Statement"]

    def condition(s, key, request_field):
        # AWS puts the request's field in a condition; moto 5.2.5 keeps it as it was sent.
        for test in (s.get("Condition") or {}).values():
            if key in test:
                return str(test[key]).lower()
        return str(s.get(request_field)).lower()

    public = [s for s in statements if s["Action"] == "lambda:InvokeFunctionUrl"]
    assert [(s["Sid"], s["Effect"], s["Principal"]) for s in public] == [("FunctionURLAllowPublicAccess", "Allow", "*")]
    assert condition(public[0], "lambda:FunctionUrlAuthType", "FunctionUrlAuthType") == "none"
    for s in statements:
        if s not in public:
            assert (s["Effect"], s["Principal"], s["Action"]) == ("Allow", "*", "lambda:InvokeFunction"), s
            assert condition(s, "lambda:InvokedViaFunctionUrl", "InvokedViaFunctionUrl") == "true", s
    for fn in FUNCTIONS:
        if fn in HTTP_FUNCTIONS:
            continue
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.get_policy(FunctionName=f"{PREFIX}-{fn}")

    # Event source mappings: partial batch failures reported, concurrency capped.
    for fn in FUNCTIONS:
        function_arn = lam.get_function_configuration(FunctionName=f"{PREFIX}-{fn}")["FunctionArn"]
        mappings = lam.list_event_source_mappings(FunctionName=function_arn)["EventSourceMappings"]
        if fn not in QUEUE_FUNCTIONS:
            assert mappings == []
            continue
        assert len(mappings) == 1
        m = mappings[0]
        assert m["EventSourceArn"] == queue_arn[fn]
        assert m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert m["ScalingConfig"]["MaximumConcurrency"] == MAX_CONCURRENCY[fn]
        assert m["ScalingConfig"]["MaximumConcurrency"] >= 2
        assert m["BatchSize"] == BATCH_SIZE[fn]

    # Execution roles: exactly these permissions, on exactly these ARNs.
    def log_arn(fn):
        return f"arn:aws:logs:{REGION}:{account}:log-group:/aws/lambda/{PREFIX}-{fn}:*"

    for fn in FUNCTIONS:
        role = f"{PREFIX}-{fn}"
        trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
        assert [(s["Principal"], s["Action"]) for s in trust["Statement"]] == [
            ({"Service": "lambda.amazonaws.com"}, "sts:AssumeRole")
        ]
        assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
        names = iam.list_role_policies(RoleName=role)["PolicyNames"]
        assert names == [f"{role}-access"]
        doc = iam.get_role_policy(RoleName=role, PolicyName=names[0])["PolicyDocument"]
        expected = {
            ("Allow", "logs:CreateLogStream", log_arn(fn), None),
            ("Allow", "logs:PutLogEvents", log_arn(fn), None),
            ("Allow", "secretsmanager:GetSecretValue", d.secret_arn, None),
        }
        if fn in QUEUE_FUNCTIONS:
            for action in ("ReceiveMessage", "DeleteMessage", "GetQueueAttributes", "ChangeMessageVisibility"):
                expected.add(("Allow", f"sqs:{action}", queue_arn[fn], None))
        if fn in NUDGING_FUNCTIONS:
            expected.add(("Allow", "sqs:SendMessage", queue_arn["fanout"], None))
        if fn in KEYRING_FUNCTIONS:
            # fanout alone may read the keyring (the exact comparison below keeps it from
            # every other role).
            expected.add(("Allow", "secretsmanager:GetSecretValue", d.keys_arn, None))
        if fn == "transform":
            expected |= {
                ("Allow", "s3:GetObject", f"{bucket_arn}/*", None),
                ("Allow", "s3:GetObjectVersion", f"{bucket_arn}/*", None),
                ("Allow", "s3:ListBucket", bucket_arn, None),
            }
        assert policy_pairs(doc) == expected, fn
    assert outputs["role_arns"] == {fn: f"arn:aws:iam::{account}:role/{PREFIX}-{fn}" for fn in FUNCTIONS}

    # Schedules: rollup's tick and fanout's sweep, each through a role that may invoke only
    # its function, passing the scheduled time where the binaries read it.
    scheduler = d.client("scheduler")
    schedules = {s["Name"] for s in scheduler.list_schedules()["Schedules"]}
    assert schedules == {f"{PREFIX}-{fn}" for fn in SCHEDULED_FUNCTIONS}
    for fn in SCHEDULED_FUNCTIONS:
        s = scheduler.get_schedule(Name=f"{PREFIX}-{fn}")
        function_arn = lam.get_function_configuration(FunctionName=f"{PREFIX}-{fn}")["FunctionArn"]
        assert s["ScheduleExpression"] == "rate(1 minute)" and s["State"] == "ENABLED"
        assert s["Target"]["Arn"] == function_arn
        assert s["Target"]["RetryPolicy"]["MaximumRetryAttempts"] == 0
        # Unescaped, or Scheduler would not substitute it.
        assert '"time":"<aws.scheduler.scheduled-time>"' in s["Target"]["Input"]
        role = s["Target"]["RoleArn"].rsplit("/", 1)[1]
        assert role == f"{PREFIX}-{fn}-schedule"
        trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
        assert [(s["Principal"], s["Action"]) for s in trust["Statement"]] == [
            ({"Service": "scheduler.amazonaws.com"}, "sts:AssumeRole")
        ]
        (name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
        doc = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        assert policy_pairs(doc) == {("Allow", "lambda:InvokeFunction", function_arn, None)}

    # Log groups made by Terraform, with their retention.
    groups = d.client("logs").describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{PREFIX}-")["logGroups"]
    assert {g["logGroupName"]: g.get("retentionInDays") for g in groups} == {
        f"/aws/lambda/{PREFIX}-{fn}": LOG_RETENTION_DAYS for fn in FUNCTIONS
    }

    # Alarms, all notifying the created topic, which is encrypted with its own key.
    topic = outputs["alarm_topic_arn"]
    assert topic == f"arn:aws:sns:{REGION}:{account}:{PREFIX}-alarms"
    key = d.client("sns").get_topic_attributes(TopicArn=topic)["Attributes"]["KmsMasterKeyId"]
    assert d.client("kms").describe_key(KeyId=key)["KeyMetadata"]["KeyManager"] == "CUSTOMER"
    alarms = {a["AlarmName"]: a for a in d.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{PREFIX}-")["MetricAlarms"]}
    expected_alarms = {}
    for fn in QUEUE_FUNCTIONS:
        expected_alarms[f"{PREFIX}-{fn}-dlq-not-empty"] = ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", f"{PREFIX}-{fn}-dlq")
        expected_alarms[f"{PREFIX}-{fn}-falling-behind"] = ("AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", f"{PREFIX}-{fn}")
    for fn in FUNCTIONS:
        expected_alarms[f"{PREFIX}-{fn}-errors"] = ("AWS/Lambda", "Errors", "FunctionName", f"{PREFIX}-{fn}")
        expected_alarms[f"{PREFIX}-{fn}-throttles"] = ("AWS/Lambda", "Throttles", "FunctionName", f"{PREFIX}-{fn}")
    for fn in HTTP_FUNCTIONS:
        expected_alarms[f"{PREFIX}-{fn}-5xx"] = ("AWS/Lambda", "Url5xxCount", "FunctionName", f"{PREFIX}-{fn}")
    assert set(alarms) == set(expected_alarms)
    for name, (namespace, metric, dim, value) in expected_alarms.items():
        a = alarms[name]
        assert (a["Namespace"], a["MetricName"], a["Dimensions"]) == (namespace, metric, [{"Name": dim, "Value": value}])
        assert a["ComparisonOperator"] == "GreaterThanThreshold"
        assert a["AlarmActions"] == [topic] and a["OKActions"] == [topic]
        if metric != "ApproximateAgeOfOldestMessage":
            assert a["Threshold"] == 0

    # A second plan changes nothing but moto's known quirks (see moto_quirk).
    plan = d.tf("plan", "-detailed-exitcode", "-input=false", "-no-color", "-out=second.tfplan", ok=(0, 2))
    changes = json.loads(d.tf("show", "-json", "second.tfplan").stdout).get("resource_changes", [])
    unexpected = [
        (rc["address"], rc["change"]["actions"], sorted(changed_attributes(rc["change"])))
        for rc in changes
        if rc["change"]["actions"] not in (["no-op"], ["read"]) and not moto_quirk(rc)
    ]
    assert unexpected == [], plan.stdout[-6000:]

    # Destroy, and nothing is left. The plan above has just refreshed the state; a second
    # refresh would add half a minute.
    d.tf("destroy", "-auto-approve", "-refresh=false", "-input=false", "-no-color")
    assert [f["FunctionName"] for f in lam.list_functions()["Functions"] if f["FunctionName"].startswith(PREFIX)] == []
    assert lam.list_event_source_mappings()["EventSourceMappings"] == []
    assert sqs.list_queues(QueueNamePrefix=PREFIX).get("QueueUrls", []) == []
    assert [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(PREFIX)] == []
    assert [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(PREFIX)] == []
    assert scheduler.list_schedules()["Schedules"] == []
    assert d.client("logs").describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{PREFIX}-")["logGroups"] == []
    assert d.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{PREFIX}-")["MetricAlarms"] == []
    assert [t["TopicArn"] for t in d.client("sns").list_topics()["Topics"]] == []
    assert json.loads(d.tf("show", "-json").stdout).get("values") is None
