"""The Azure Terraform (terraform/modules/azure and terraform/examples/azure), checked without
the azurerm provider, which is not reachable here (so no `terraform validate`, plan or apply):

- `terraform fmt -check` on both directories;
- checkov (offline, --skip-download): no failed check, and every skip carries a reason;
- the module's input validations, run by Terraform itself on a copy of variables.tf (the only
  file that needs no provider) through `terraform test`;
- the wiring, read with python-hcl2 and compared with the committed infra/azure/*/function.json
  files: one Flex Consumption app per binary, the packaging rule's folders, each trigger's
  queue and the role scoped to it, the nudge senders, the blob reader, identity-based
  connections, no secret in any app setting, Event Grid's route, tags on every taggable
  resource, and references that resolve;
- the query app: its function.json and host file (an HTTP function the host forwards
  requests to as they are, at /v1/... without the /api prefix), no storage role beyond the
  host's, its CORS setting and its URL.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest
from hcl2 import SerializationOptions

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "terraform" / "modules" / "azure"
EXAMPLE = ROOT / "terraform" / "examples" / "azure"
AZURE = ROOT / "infra" / "azure"
TOOLS = Path(os.environ.get("FERRY_TOOLS", ROOT / ".ferry" / "tools"))
CHECKOV = TOOLS / "checkov" / "bin" / "checkov"

FUNCTIONS = ["ingest", "transform", "rollup", "fanout", "query"]
# Apps that have a host file of their own (infra/azure/<app>-host.json) instead of host.json.
OWN_HOST_FILE = ["query"]

# Resource types of the module that take tags, and those that do not (role assignments,
# sub-resources of the storage account, Event Grid subscriptions, diagnostic settings and
# the flexible server's children have no tags in azurerm).
TAGGABLE = {
    "azurerm_application_insights",
    "azurerm_eventgrid_system_topic",
    "azurerm_function_app_flex_consumption",
    "azurerm_log_analytics_workspace",
    "azurerm_monitor_action_group",
    "azurerm_monitor_metric_alert",
    "azurerm_monitor_scheduled_query_rules_alert_v2",
    "azurerm_postgresql_flexible_server",
    "azurerm_service_plan",
    "azurerm_storage_account",
    "azurerm_user_assigned_identity",
}
UNTAGGABLE = {
    "azurerm_eventgrid_system_topic_event_subscription",
    "azurerm_monitor_diagnostic_setting",
    "azurerm_postgresql_flexible_server_active_directory_administrator",
    "azurerm_postgresql_flexible_server_configuration",
    "azurerm_postgresql_flexible_server_database",
    "azurerm_postgresql_flexible_server_firewall_rule",
    "azurerm_role_assignment",
    "azurerm_storage_container",
    "azurerm_storage_queue",
}

READER = "Storage Queue Data Reader"
PROCESSOR = "Storage Queue Data Message Processor"
SENDER = "Storage Queue Data Message Sender"
BLOB_POISON = "webjobs-blobtrigger-poison"


# --- reading the HCL ---------------------------------------------------------------------


def parse_dir(path: Path) -> dict:
    """All blocks of a directory's *.tf files: resources by type and name, locals, variables,
    outputs, module calls, providers, ephemeral resources; plus the source text without
    comments (for reference checks)."""
    options = SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    tree = {
        "resource": {},
        "ephemeral": {},
        "locals": {},
        "variable": {},
        "output": {},
        "module": {},
        "provider": {},
        "terraform": [],
        "text": "",
    }
    for tf in sorted(path.glob("*.tf")):
        with tf.open() as f:
            doc = hcl2.load(f, serialization_options=options)
        for kind in ("resource", "ephemeral"):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        assert name not in tree[kind].get(rtype, {}), f"{rtype}.{name} twice"
                        tree[kind].setdefault(rtype, {})[name] = body
        for block in doc.get("locals", []):
            tree["locals"].update(block)
        for kind in ("variable", "output", "module", "provider"):
            for block in doc.get(kind, []):
                tree[kind].update(block)
        tree["terraform"] += doc.get("terraform", [])
        tree["text"] += strip_comments(tf.read_text()) + "\n"
    return tree


def strip_comments(text: str) -> str:
    # Good enough for this code base: no "#" or "//" inside the strings that matter here
    # except URLs, which are kept by requiring whitespace or line start before "//".
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"(^|\s)(#|//).*$", "", line) for line in text.splitlines())


def resources(tree: dict, rtype: str) -> dict:
    return tree["resource"].get(rtype, {})


def block(body: dict, name: str) -> dict:
    """The single nested block `name` of a resource body."""
    blocks = body.get(name)
    assert isinstance(blocks, list) and len(blocks) == 1, f"expected one {name} block"
    return blocks[0]


@pytest.fixture(scope="module")
def module() -> dict:
    return parse_dir(MODULE)


@pytest.fixture(scope="module")
def example() -> dict:
    return parse_dir(EXAMPLE)


# --- reading the function.json files -------------------------------------------------------


def app_folders(app: str) -> list:
    """scripts/package.sh's rule: app F holds infra/azure/F and infra/azure/F-*."""
    return sorted(
        d.name
        for d in AZURE.iterdir()
        if (d / "function.json").is_file() and (d.name == app or d.name.startswith(app + "-"))
    )


@pytest.fixture(scope="module")
def bindings() -> dict:
    """Every binding of every function of each app, from the committed function.json files."""
    out = {}
    for app in FUNCTIONS:
        out[app] = []
        for folder in app_folders(app):
            for b in json.loads((AZURE / folder / "function.json").read_text())["bindings"]:
                out[app].append(dict(b, function=folder))
    return out


def expected_queue_grants(bindings: dict) -> set:
    """The queue roles the function.json bindings need, one queue each: a queue trigger reads
    (Reader: the length the scale controller polls; Processor: receive and delete) and parks
    failures in <queue>-poison; a queue output only sends; a blob trigger parks failures in
    webjobs-blobtrigger-poison."""
    grants = set()
    for app, bs in bindings.items():
        for b in bs:
            if b["type"] == "queueTrigger":
                q = b["queueName"]
                grants |= {(app, q, READER), (app, q, PROCESSOR), (app, f"{q}-poison", SENDER)}
            elif b["type"] == "queue" and b["direction"] == "out":
                grants.add((app, b["queueName"], SENDER))
            elif b["type"] == "blobTrigger":
                grants.add((app, BLOB_POISON, SENDER))
    return grants


def app_settings(module: dict, app: str) -> dict:
    """The module's own settings of one app (before the caller's app_settings)."""
    return {**module["locals"]["shared_app_settings"], **module["locals"]["per_app_settings"][app]}


# --- tools ----------------------------------------------------------------------------------


def terraform() -> str:
    exe = shutil.which("terraform")
    if exe is None:
        pytest.skip("terraform CLI not on PATH")
    return exe


def run(cmd, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("path", [MODULE, EXAMPLE], ids=["module", "example"])
def test_terraform_fmt_check_passes(path):
    result = run([terraform(), "fmt", "-check", "-recursive", "-diff", str(path)])
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("path", [MODULE, EXAMPLE], ids=["module", "example"])
def test_checkov_finds_no_failed_check_and_every_skip_has_a_reason(path):
    if not CHECKOV.exists():
        pytest.skip(f"checkov not installed at {CHECKOV}")
    result = run(
        [str(CHECKOV), "--skip-download", "--framework", "terraform", "-d", str(path), "-o", "json"]
    )
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    results = report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert failed == [], f"checkov failed checks: {failed}"
    assert result.returncode == 0
    assert len(results["passed_checks"]) >= 20, "checkov scanned (almost) nothing"
    for c in results["skipped_checks"]:
        reason = (c.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason) > 20, f"{c['check_id']} on {c['resource']} is skipped without a reason"


# --- apps ----------------------------------------------------------------------------------


def test_one_flex_consumption_app_per_binary_on_its_own_fc1_plan(module):
    crates = sorted(d.name for d in (ROOT / "functions").iterdir() if (d / "Cargo.toml").is_file())
    assert crates == sorted(FUNCTIONS)
    functions = module["locals"]["functions"]
    assert sorted(functions) == sorted(FUNCTIONS)
    assert all(v == f"${{var.functions.{k}}}" for k, v in functions.items())

    plans = resources(module, "azurerm_service_plan")
    assert list(plans) == ["app"]
    plan = plans["app"]
    assert plan["for_each"] == "${local.functions}"
    assert (plan["os_type"], plan["sku_name"]) == ("Linux", "FC1")

    apps = resources(module, "azurerm_function_app_flex_consumption")
    assert list(apps) == ["app"]
    app = apps["app"]
    assert app["for_each"] == "${local.functions}"
    assert app["name"] == "${var.name_prefix}-${each.key}"
    assert app["service_plan_id"] == "${azurerm_service_plan.app[each.key].id}"
    assert app["runtime_name"] == "custom"
    assert app["https_only"] is True
    assert app["maximum_instance_count"] == "${each.value.maximum_instance_count}"
    assert app["instance_memory_in_mb"] == "${each.value.instance_memory_in_mb}"
    assert "zip_deploy_file" not in app, "code goes out with OneDeploy after apply"


def test_each_app_deploys_from_its_own_container_with_its_own_identity(module):
    app = resources(module, "azurerm_function_app_flex_consumption")["app"]
    assert app["storage_container_type"] == "blobContainer"
    assert app["storage_authentication_type"] == "UserAssignedIdentity"
    assert "storage_access_key" not in app
    assert app["storage_user_assigned_identity_id"] == "${azurerm_user_assigned_identity.app[each.key].id}"
    assert app["storage_container_endpoint"] == (
        "${azurerm_storage_account.main.primary_blob_endpoint}"
        '${azurerm_storage_container.this["deploy-${each.key}"].name}'
    )
    containers = module["locals"]["containers"]
    assert all(f"deploy-{fn}" in containers for fn in FUNCTIONS)
    identity = block(app, "identity")
    assert identity["identity_ids"] == ["${azurerm_user_assigned_identity.app[each.key].id}"]
    assert resources(module, "azurerm_user_assigned_identity")["app"]["for_each"] == "${local.functions}"


def test_packaging_rule_folders_match_the_committed_function_json_files():
    assert {fn: app_folders(fn) for fn in FUNCTIONS} == {
        "ingest": ["ingest"],
        "transform": ["transform", "transform-blob"],
        "rollup": ["rollup"],
        "fanout": ["fanout", "fanout-timer"],
        "query": ["query"],
    }
    packaged = [d for fn in FUNCTIONS for d in app_folders(fn)]
    present = sorted(d.name for d in AZURE.iterdir() if (d / "function.json").is_file())
    assert sorted(packaged) == present, "a function.json folder belongs to no app, or to two"


def test_rollup_runs_on_one_instance(module):
    conditions = [v["condition"] for v in module["variable"]["functions"]["validation"]]
    assert "${var.functions.rollup.maximum_instance_count == 1}" in conditions
    functions_type = module["variable"]["functions"]["type"]
    rollup = functions_type[functions_type.index("rollup = optional(") :]
    assert re.match(r"rollup = optional\(object\(\{maximum_instance_count = optional\(number, 1\)", rollup)


# --- queues and roles ---------------------------------------------------------------------


def test_every_trigger_queue_in_function_json_exists_in_the_module(module, bindings):
    queues = module["locals"]["queues"]
    assert resources(module, "azurerm_storage_queue")["this"]["for_each"] == "${toset(local.queues)}"
    named = {b["queueName"] for bs in bindings.values() for b in bs if "queueName" in b}
    assert named == {"ingest", "blob-created", "fanout"}
    assert named <= set(queues)
    # The poison queues exist so that their roles can be scoped to them.
    assert {f"{q}-poison" for q in named} | {BLOB_POISON} <= set(queues)


def test_queue_roles_are_exactly_what_the_bindings_need(module, bindings):
    declared = [(g["app"], g["queue"], g["role"]) for g in module["locals"]["queue_role_grants"]]
    assert len(declared) == len(set(declared)), "a queue grant is listed twice"
    assert set(declared) == expected_queue_grants(bindings)
    assert all(q in module["locals"]["queues"] for _, q, _ in declared)


def test_each_app_processes_only_the_queue_its_trigger_reads(module, bindings):
    for app, bs in bindings.items():
        triggers = {b["queueName"] for b in bs if b["type"] == "queueTrigger"}
        processed = {
            g["queue"]
            for g in module["locals"]["queue_role_grants"]
            if g["app"] == app and g["role"] == PROCESSOR
        }
        assert processed == triggers, app


def test_queue_role_assignments_are_scoped_to_one_queue(module):
    ra = resources(module, "azurerm_role_assignment")["queue"]
    assert ra["for_each"] == '${{for g in local.queue_role_grants : "${g.app}/${g.queue}/${g.role}" => g}}'
    assert ra["scope"] == "${azurerm_storage_queue.this[each.value.queue].id}"
    assert ra["role_definition_name"] == "${each.value.role}"
    assert ra["principal_id"] == "${azurerm_user_assigned_identity.app[each.value.app].principal_id}"


def test_nudge_senders_may_send_to_the_fanout_queue_only(module, bindings):
    nudgers = {
        app
        for app, bs in bindings.items()
        for b in bs
        if b["type"] == "queue" and b["direction"] == "out"
    }
    assert nudgers == {"ingest", "transform", "rollup"}
    for b in (b for bs in bindings.values() for b in bs if b["name"] == "nudge"):
        assert (b["queueName"], b["connection"]) == ("fanout", "FERRY_FANOUT_STORAGE")
    for app in FUNCTIONS:
        sends = {
            g["queue"]
            for g in module["locals"]["queue_role_grants"]
            if g["app"] == app and g["role"] == SENDER and not g["queue"].endswith("-poison")
        }
        assert sends == ({"fanout"} if app in nudgers else set()), app


def test_transform_reads_the_incoming_container_and_nothing_else_does(module, bindings):
    blob_paths = [b["path"] for b in bindings["transform"] if b["type"] == "blobTrigger"]
    assert blob_paths == ["incoming/{name}"]
    incoming = blob_paths[0].split("/")[0]
    assert incoming in module["locals"]["containers"]
    grants = module["locals"]["container_role_grants"]
    readers = {(g["app"], g["container"]) for g in grants if g["role"] == "Storage Blob Data Reader"}
    assert readers == {("transform", incoming)}
    assert not [g for g in grants if g["container"] == incoming and g["role"] != "Storage Blob Data Reader"]
    ra = resources(module, "azurerm_role_assignment")["container"]
    assert ra["scope"] == "${azurerm_storage_container.this[each.value.container].id}"
    assert ra["principal_id"] == "${azurerm_user_assigned_identity.app[each.value.app].principal_id}"


def test_host_storage_roles_are_scoped_to_the_host_and_own_deployment_containers(module):
    owners = {
        (g["app"], g["container"])
        for g in module["locals"]["container_role_grants"]
        if g["role"] == "Storage Blob Data Owner"
    }
    assert owners == {
        (app, c)
        for app in FUNCTIONS
        for c in ("azure-webjobs-hosts", "azure-webjobs-secrets", f"deploy-{app}")
    }


def test_no_role_is_granted_on_the_account_or_resource_group(module):
    allowed_scopes = {
        "${azurerm_storage_queue.this[each.value.queue].id}",
        "${azurerm_storage_container.this[each.value.container].id}",
        '${azurerm_storage_queue.this["blob-created"].id}',
        '${azurerm_storage_container.this["eventgrid-deadletter"].id}',
        "${azurerm_application_insights.main.id}",
        "${local.database_url_secret_scope}",
        "${local.webhook_keys_secret_scope}",
    }
    for name, ra in resources(module, "azurerm_role_assignment").items():
        assert ra["scope"] in allowed_scopes, f"azurerm_role_assignment.{name}: {ra['scope']}"
        assert "Contributor" not in ra["role_definition_name"] or name == "eventgrid_deadletter", name
        assert ra["principal_type"] == "ServicePrincipal", name


# --- settings and secrets --------------------------------------------------------------------


def test_app_settings_are_the_module_settings_then_the_callers(module):
    app = resources(module, "azurerm_function_app_flex_consumption")["app"]
    assert app["app_settings"] == (
        "${merge(local.shared_app_settings, local.per_app_settings[each.key], "
        'each.key == "query" ? local.query_app_settings : {}, '
        "var.app_settings, each.value.app_settings)}"
    )
    assert sorted(module["locals"]["per_app_settings"]) == sorted(FUNCTIONS)


def test_every_connection_the_bindings_name_is_identity_based_with_the_apps_own_identity(module, bindings):
    for app, bs in bindings.items():
        settings = app_settings(module, app)
        own = f'${{local.client_ids["{app}"]}}'
        for connection in {b["connection"] for b in bs if "connection" in b}:
            assert settings.get(f"{connection}__credential") == "managedidentity", (app, connection)
            assert settings.get(f"{connection}__clientId") == own, (app, connection)
            assert (
                f"{connection}__accountName" in settings
                or f"{connection}__queueServiceUri" in settings
            ), (app, connection)
            # A bare <connection> setting would be read as a connection string.
            assert settings.get(connection, "") == "", (app, connection)
        assert settings["AzureWebJobsStorage__accountName"] == "${azurerm_storage_account.main.name}"
        # The nudge queue's connection, exactly for the apps whose bindings name it.
        if any(b.get("connection") == "FERRY_FANOUT_STORAGE" for b in bs):
            assert settings["FERRY_FANOUT_STORAGE__queueServiceUri"] == (
                "${azurerm_storage_account.main.primary_queue_endpoint}"
            )
        else:
            assert not [k for k in settings if k.startswith("FERRY_FANOUT_STORAGE")], app
        assert settings["FERRY_LOG_FORMAT"] == "json"
        assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
            f'ClientId={own};Authorization=AAD'
        )


def test_transform_streams_blobs_with_its_own_identity(module):
    settings = app_settings(module, "transform")
    assert settings["AZURE_STORAGE_ACCOUNT_NAME"] == "${azurerm_storage_account.main.name}"
    assert settings["AZURE_CLIENT_ID"] == '${local.client_ids["transform"]}'
    for app in ("ingest", "rollup", "fanout", "query"):
        assert not [k for k in app_settings(module, app) if k.startswith("AZURE_")], app


def test_no_app_setting_holds_a_literal_secret(module):
    secret_name = re.compile(r"(?i)PASSWORD|KEY|SECRET|CONNECTION_?STRING")
    secret_ref = re.compile(
        r"access_key|connection_string|instrumentation_key|sas|password|\.value\b|random_"
    )
    secret_literal = re.compile(r"(?i)AccountKey=|SharedAccessSignature|[?&]sig=|://[^/@\s]+:[^/@\s]+@")
    for app in FUNCTIONS:
        for name, value in app_settings(module, app).items():
            assert not secret_literal.search(value), (app, name)
            assert not secret_ref.search(value), (app, name)
            if secret_name.search(name):
                assert value.startswith("@Microsoft.KeyVault(SecretUri="), (app, name)
        assert app_settings(module, app)["DATABASE_URL"] == (
            "@Microsoft.KeyVault(SecretUri=${var.database_url_secret_id})"
        )
    app = resources(module, "azurerm_function_app_flex_consumption")["app"]
    assert "connection_string" not in app
    site = block(app, "site_config")
    # The one connection string: Application Insights', which Microsoft documents as not a
    # secret (an identifier of the resource and its ingestion endpoint); with local
    # authentication off it cannot write telemetry without the app's Entra identity.
    assert site["application_insights_connection_string"] == (
        "${azurerm_application_insights.main.connection_string}"
    )
    assert "application_insights_key" not in site
    insights = resources(module, "azurerm_application_insights")["main"]
    assert insights["local_authentication_disabled"] is True


def test_flex_rejected_runtime_settings_are_absent(module):
    for app in FUNCTIONS:
        names = set(app_settings(module, app))
        assert not names & {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"}, app


def test_key_vault_reference_is_resolved_by_each_app_on_the_one_secret(module):
    ra = resources(module, "azurerm_role_assignment")["database_url"]
    assert ra["for_each"] == "${local.functions}"
    assert ra["role_definition_name"] == "Key Vault Secrets User"
    assert ra["scope"] == "${local.database_url_secret_scope}"
    assert module["locals"]["database_url_secret_scope"] == (
        "${var.key_vault_id}/secrets/${local.database_url_secret_name}"
    )
    assert ra["principal_id"] == (
        "${azurerm_function_app_flex_consumption.app[each.key].identity[0].principal_id}"
    )
    # Key Vault references use the system-assigned identity (Flex in azurerm has no
    # key_vault_reference_identity_id), so the app must have one.
    identity = block(resources(module, "azurerm_function_app_flex_consumption")["app"], "identity")
    assert identity["type"] == "SystemAssigned, UserAssigned"


def test_no_variable_can_carry_a_password(module):
    text = module["text"]
    assert "administrator_password " not in text and "administrator_password=" not in text
    server = resources(module, "azurerm_postgresql_flexible_server")["main"]
    assert "administrator_password" not in server
    assert server["administrator_password_wo"] == (
        "${ephemeral.azurerm_key_vault_secret.database_admin_password[0].value}"
    )
    secret = module["ephemeral"]["azurerm_key_vault_secret"]["database_admin_password"]
    assert secret["key_vault_id"] == "${var.key_vault_id}"
    for name, var in module["variable"].items():
        assert "password" not in name.lower() and "secret_value" not in name.lower(), name
        assert not var.get("sensitive"), f"{name}: no variable should need to be sensitive"


def test_only_fanout_gets_the_webhook_keyring_as_a_key_vault_reference(module):
    reference = "@Microsoft.KeyVault(SecretUri=${var.webhook_keys_secret_id})"
    assert app_settings(module, "fanout")["FERRY_WEBHOOK_KEYS"] == reference
    assert "FERRY_WEBHOOK_KEYS" not in module["locals"]["shared_app_settings"]
    for app in ("ingest", "transform", "rollup", "query"):
        settings = app_settings(module, app)
        assert not [k for k in settings if k.startswith("FERRY_WEBHOOK_KEYS")], app
        assert not [v for v in settings.values() if "webhook_keys" in v], app


def test_only_fanouts_identity_may_read_the_webhook_keyring(module):
    ras = resources(module, "azurerm_role_assignment")
    ra = ras["webhook_keys"]
    assert "for_each" not in ra and "count" not in ra
    assert ra["role_definition_name"] == "Key Vault Secrets User"
    assert ra["scope"] == "${local.webhook_keys_secret_scope}"
    assert module["locals"]["webhook_keys_secret_scope"] == (
        "${var.key_vault_id}/secrets/${local.webhook_keys_secret_name}"
    )
    assert module["locals"]["webhook_keys_secret_name"] == (
        '${element(split("/", var.webhook_keys_secret_id), 4)}'
    )
    # The identity that resolves Key Vault references (see the DATABASE_URL test), of fanout.
    assert ra["principal_id"] == (
        '${azurerm_function_app_flex_consumption.app["fanout"].identity[0].principal_id}'
    )
    others = [n for n, r in ras.items() if n != "webhook_keys" and "webhook_keys" in json.dumps(r)]
    assert others == [], "another role assignment touches the keyring secret"


# --- the query app (HTTP) ------------------------------------------------------------------------


def host_file(app: str) -> Path:
    """scripts/package.sh's rule: infra/azure/<app>-host.json when there is one, else host.json."""
    own = AZURE / f"{app}-host.json"
    return own if own.is_file() else AZURE / "host.json"


def test_only_the_apps_listed_have_a_host_file_of_their_own():
    own = sorted(p.name[: -len("-host.json")] for p in AZURE.glob("*-host.json"))
    assert own == OWN_HOST_FILE
    assert all(not (AZURE / f"{app}-host.json").is_dir() for app in FUNCTIONS)


def test_query_is_one_http_trigger_in_and_one_http_out_so_the_host_forwards_requests(bindings):
    # The host forwards a request as it was sent (and passes the answer back as it is) only
    # to a function whose bindings are exactly one httpTrigger in and one http out; any
    # other binding brings back the invocation envelope (IsHttpInAndOutFunction in the host).
    query = bindings["query"]
    assert [(b["type"], b["direction"]) for b in query] == [("httpTrigger", "in"), ("http", "out")]
    trigger = query[0]
    assert trigger["authLevel"] == "anonymous", "the handler checks API keys itself"
    assert sorted(trigger["methods"]) == ["get", "head", "options"]
    assert trigger["route"] == "{*path}"
    assert query[1]["name"] in ("res", "$return")
    # No other app serves HTTP: only query's host file forwards requests.
    for app, bs in bindings.items():
        if app != "query":
            assert not [b for b in bs if b["type"] in ("httpTrigger", "http")], app


def test_query_host_file_forwards_requests_at_v1_without_the_api_prefix():
    shared = json.loads((AZURE / "host.json").read_text())
    host = json.loads(host_file("query").read_text())
    assert host_file("query").name == "query-host.json"
    assert host["version"] == "2.0"
    assert host["customHandler"]["description"] == shared["customHandler"]["description"]
    assert host["customHandler"]["description"]["defaultExecutablePath"] == "handler"
    assert host["customHandler"]["enableForwardingHttpRequest"] is True
    # Proxying, when on, takes precedence over forwarding; it stays off.
    assert not host["customHandler"].get("enableProxyingHttpRequest", False)
    assert host["extensions"]["http"]["routePrefix"] == ""
    assert "queues" not in host["extensions"], "query has no queue binding"
    assert host["extensionBundle"] == shared["extensionBundle"]
    # The shared host file keeps the envelope for the queue and timer functions.
    assert shared["customHandler"]["enableForwardingHttpRequest"] is False
    assert "http" not in shared.get("extensions", {})


def test_query_holds_no_storage_role_beyond_the_hosts(module):
    assert not [g for g in module["locals"]["queue_role_grants"] if g["app"] == "query"]
    assert {
        (g["container"], g["role"]) for g in module["locals"]["container_role_grants"] if g["app"] == "query"
    } == {
        ("azure-webjobs-hosts", "Storage Blob Data Owner"),
        ("azure-webjobs-secrets", "Storage Blob Data Owner"),
        ("deploy-query", "Storage Blob Data Owner"),
    }


def test_query_gets_its_cors_origins_only_when_there_are_some(module):
    assert module["locals"]["query_app_settings"] == (
        '${length(var.query_cors_origins) == 0 ? {} : '
        '{FERRY_QUERY_CORS_ORIGINS = join(",", var.query_cors_origins)}}'
    )
    for app in FUNCTIONS:
        assert "FERRY_QUERY_CORS_ORIGINS" not in app_settings(module, app), app
    variable = module["variable"]["query_cors_origins"]
    assert variable["type"] == "${list(string)}" and variable["default"] == []
    assert variable["nullable"] is False


def test_query_failures_alert_on_server_errors_only(module):
    failures = resources(module, "azurerm_monitor_scheduled_query_rules_alert_v2")["function_failures"]
    query = block(failures, "criteria")["query"]
    assert '${each.key == "query" ? " and toint(resultCode) >= 500" : ""}' in query


def test_query_url_is_the_apps_hostname_at_v1(module, example):
    assert module["output"]["query_url"]["value"] == (
        'https://${azurerm_function_app_flex_consumption.app["query"].default_hostname}/v1/'
    )
    assert example["output"]["query_url"]["value"] == "${module.ferry.query_url}"


# --- Event Grid --------------------------------------------------------------------------------


def test_event_grid_sends_blob_created_in_incoming_to_the_queue_transform_reads(module, bindings):
    transform_queues = [b["queueName"] for b in bindings["transform"] if b["type"] == "queueTrigger"]
    assert transform_queues == ["blob-created"]
    incoming = next(b["path"] for b in bindings["transform"] if b["type"] == "blobTrigger").split("/")[0]

    topic = resources(module, "azurerm_eventgrid_system_topic")["storage"]
    assert topic["source_resource_id"] == "${azurerm_storage_account.main.id}"
    assert topic["topic_type"] == "Microsoft.Storage.StorageAccounts"

    sub = resources(module, "azurerm_eventgrid_system_topic_event_subscription")["blob_created"]
    assert sub["system_topic"] == "${azurerm_eventgrid_system_topic.storage.name}"
    assert sub["included_event_types"] == ["Microsoft.Storage.BlobCreated"]
    assert block(sub, "subject_filter")["subject_begins_with"] == (
        f"/blobServices/default/containers/{incoming}/blobs/"
    )
    endpoint = block(sub, "storage_queue_endpoint")
    assert endpoint["storage_account_id"] == "${azurerm_storage_account.main.id}"
    assert endpoint["queue_name"] == f'${{azurerm_storage_queue.this["{transform_queues[0]}"].name}}'
    retry = block(sub, "retry_policy")
    assert retry["max_delivery_attempts"] == "${var.event_grid.max_delivery_attempts}"
    dead = block(sub, "storage_blob_dead_letter_destination")
    assert dead["storage_blob_container_name"] == '${azurerm_storage_container.this["eventgrid-deadletter"].name}'
    assert "eventgrid-deadletter" in module["locals"]["containers"]

    eg_identity = "${azurerm_user_assigned_identity.eventgrid.id}"
    assert block(sub, "delivery_identity")["user_assigned_identity"] == eg_identity
    assert block(sub, "dead_letter_identity")["user_assigned_identity"] == eg_identity
    assert block(topic, "identity")["identity_ids"] == [eg_identity]
    ras = resources(module, "azurerm_role_assignment")
    assert (ras["eventgrid_delivery"]["scope"], ras["eventgrid_delivery"]["role_definition_name"]) == (
        f'${{azurerm_storage_queue.this["{transform_queues[0]}"].id}}',
        SENDER,
    )
    assert ras["eventgrid_deadletter"]["scope"] == '${azurerm_storage_container.this["eventgrid-deadletter"].id}'
    for name in ("eventgrid_delivery", "eventgrid_deadletter"):
        assert ras[name]["principal_id"] == "${azurerm_user_assigned_identity.eventgrid.principal_id}"


# --- storage, monitoring, tags ---------------------------------------------------------------


def test_storage_account_is_entra_only_tls12_and_private(module):
    sa = resources(module, "azurerm_storage_account")["main"]
    assert sa["min_tls_version"] == "TLS1_2"
    assert sa["shared_access_key_enabled"] is False
    assert sa["allow_nested_items_to_be_public"] is False
    assert sa["https_traffic_only_enabled"] is True
    for c in resources(module, "azurerm_storage_container").values():
        assert c["container_access_type"] == "private"


def test_alerts_cover_failed_invocations_poison_messages_and_event_grid(module):
    host = json.loads((AZURE / "host.json").read_text())
    assert host["extensions"]["queues"]["maxDequeueCount"] >= 1

    rules = resources(module, "azurerm_monitor_scheduled_query_rules_alert_v2")
    failures = rules["function_failures"]
    assert failures["for_each"] == "${local.functions}"
    query = block(failures, "criteria")["query"]
    assert "success == false" in query
    assert "${azurerm_function_app_flex_consumption.app[each.key].name}" in query
    poison = block(rules["poison_messages"], "criteria")["query"]
    assert "MaxDequeueCount" in poison and "-poison" in poison

    metric = resources(module, "azurerm_monitor_metric_alert")["eventgrid"]
    assert metric["scopes"] == ["${azurerm_eventgrid_system_topic.storage.id}"]
    assert block(metric, "criteria")["metric_namespace"] == "Microsoft.EventGrid/systemTopics"
    assert block(metric, "criteria")["metric_name"] == "${each.value.metric}"
    assert {m["metric"] for m in metric["for_each"].values()} == {"DeadLetteredCount", "DeliveryAttemptFailCount"}

    for body in [failures, rules["poison_messages"], metric]:
        assert "local.action_group_ids" in json.dumps(body["dynamic"]), "alert notifies no one"
    group = resources(module, "azurerm_monitor_action_group")["alerts"]
    assert group["count"] == "${length(var.alert_emails) > 0 ? 1 : 0}"


def test_logs_have_explicit_retention(module):
    law = resources(module, "azurerm_log_analytics_workspace")["main"]
    assert law["retention_in_days"] == "${var.log_retention_in_days}"
    assert module["variable"]["log_retention_in_days"]["default"] >= 30
    insights = resources(module, "azurerm_application_insights")["main"]
    assert insights["workspace_id"] == "${azurerm_log_analytics_workspace.main.id}"


def test_every_taggable_resource_gets_the_module_tags(module):
    assert module["locals"]["tags"].startswith("${merge(") and "var.tags" in module["locals"]["tags"]
    for rtype, named in module["resource"].items():
        assert rtype in TAGGABLE | UNTAGGABLE, f"classify {rtype} as taggable or not in this test"
        for name, body in named.items():
            if rtype in TAGGABLE:
                assert body.get("tags") == "${local.tags}", f"{rtype}.{name} has no tags"
            else:
                assert "tags" not in body, f"{rtype}.{name}"


# --- references and the example ---------------------------------------------------------------


def test_references_resolve_to_declarations(module):
    text = module["text"]
    used_vars = set(re.findall(r"\bvar\.([a-z_][a-z0-9_]*)", text))
    assert used_vars == set(module["variable"]), "undeclared or unused variables"
    used_locals = set(re.findall(r"\blocal\.([a-z_][a-z0-9_]*)", text))
    assert used_locals == set(module["locals"]), "undeclared or unused locals"
    declared = {f"{t}.{n}" for t, named in module["resource"].items() for n in named}
    used = set(re.findall(r"(?<![\w.\"])(azurerm_[a-z0-9_]+\.[a-z_][a-z0-9_]*)", text))
    used -= {f"{t}.{n}" for t, named in module["ephemeral"].items() for n in named}
    assert used <= declared, f"references to undeclared resources: {used - declared}"
    ephemeral_used = set(re.findall(r"ephemeral\.(azurerm_[a-z0-9_]+\.[a-z_]+)", text))
    assert ephemeral_used == {f"{t}.{n}" for t, named in module["ephemeral"].items() for n in named}


def test_every_variable_and_output_is_typed_and_described(module):
    for name, var in module["variable"].items():
        assert var.get("description"), name
        assert var.get("type"), name
        assert "any" not in re.findall(r"\w+", var["type"]), name
    for name, out in module["output"].items():
        assert out.get("description"), name


def test_example_calls_the_module_with_every_required_input(module, example):
    call = example["module"]["ferry"]
    assert call["source"] == "../../modules/azure"
    required = {n for n, v in module["variable"].items() if "default" not in v}
    assert required <= set(call), f"missing inputs: {required - set(call)}"
    assert set(call) - {"source"} <= set(module["variable"]), "inputs the module does not declare"
    provider = example["provider"]["azurerm"]
    assert "features" in provider
    assert provider["storage_use_azuread"] is True
    assert example["variable"]["functions"]["type"] == module["variable"]["functions"]["type"]
    constraints = {
        block["azurerm"]["version"]
        for t in module["terraform"] + example["terraform"]
        for block in t["required_providers"]
    }
    assert constraints == {"~> 4.60"}


# --- input validation, run by Terraform on variables.tf alone -----------------------------------

VALID = {
    "name_prefix": "ferry-prod",
    "resource_group_name": "ferry-prod-rg",
    "location": "westeurope",
    "key_vault_id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/kv"
    "/providers/Microsoft.KeyVault/vaults/ferrykv",
    "database_url_secret_id": "https://ferrykv.vault.azure.net/secrets/ferry-database-url",
    "webhook_keys_secret_id": "https://ferrykv.vault.azure.net/secrets/ferry-webhook-keys",
}
# A keyring entry of 32 zero bytes: a placeholder, not a key.
PLACEHOLDER_KEYRING = "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

# (name, variables over VALID, the variable whose validation must fail, or None)
VALIDATION_CASES = [
    ("defaults", {}, None),
    ("prefix_too_long", {"name_prefix": "ferry-production-x"}, "name_prefix"),
    ("prefix_uppercase", {"name_prefix": "Ferry"}, "name_prefix"),
    ("prefix_double_hyphen", {"name_prefix": "ferry--prod"}, "name_prefix"),
    ("location_display_name", {"location": "West Europe"}, "location"),
    ("secret_with_version", {"database_url_secret_id": VALID["database_url_secret_id"] + "/0123abcd"}, "database_url_secret_id"),
    ("secret_in_another_vault", {"database_url_secret_id": "https://otherkv.vault.azure.net/secrets/ferry-database-url"}, "database_url_secret_id"),
    ("vault_id_malformed", {"key_vault_id": "ferrykv"}, "key_vault_id"),
    ("keys_secret_with_version", {"webhook_keys_secret_id": VALID["webhook_keys_secret_id"] + "/0123abcd"}, "webhook_keys_secret_id"),
    ("keys_secret_in_another_vault", {"webhook_keys_secret_id": "https://otherkv.vault.azure.net/secrets/ferry-webhook-keys"}, "webhook_keys_secret_id"),
    ("keys_secret_not_a_url", {"webhook_keys_secret_id": PLACEHOLDER_KEYRING}, "webhook_keys_secret_id"),
    ("keys_secret_is_the_database_url", {"webhook_keys_secret_id": VALID["database_url_secret_id"]}, "webhook_keys_secret_id"),
    ("keyring_as_setting", {"app_settings": {"FERRY_WEBHOOK_KEYS": PLACEHOLDER_KEYRING}}, "app_settings"),
    ("keyring_as_fanout_setting", {"functions": {"fanout": {"app_settings": {"FERRY_WEBHOOK_KEYS": PLACEHOLDER_KEYRING}}}}, "functions"),
    ("keyring_file_as_setting", {"app_settings": {"FERRY_WEBHOOK_KEYS_FILE": "/home/keys"}}, "app_settings"),
    ("rollup_two_instances", {"functions": {"rollup": {"maximum_instance_count": 2}}}, "functions"),
    ("ingest_fifty_instances", {"functions": {"ingest": {"maximum_instance_count": 50}}}, None),
    ("memory_not_a_flex_size", {"functions": {"fanout": {"instance_memory_in_mb": 1024}}}, "functions"),
    ("database_url_as_setting", {"functions": {"ingest": {"app_settings": {"DATABASE_URL": "postgres://u:p@h/db"}}}}, "functions"),
    ("password_setting", {"app_settings": {"PG_PASSWORD": "x"}}, "app_settings"),
    ("worker_runtime_setting", {"app_settings": {"FUNCTIONS_WORKER_RUNTIME": "custom"}}, "app_settings"),
    ("plain_setting", {"app_settings": {"RUST_LOG": "info", "FERRY_DB_MAX_CONNECTIONS": "24"}}, None),
    ("elastic_cluster_on_16", {"database": {"elastic_cluster_size": 2}}, "database"),
    ("elastic_cluster_on_17", {"database": {"version": "17", "elastic_cluster_size": 2}}, None),
    ("elastic_cluster_too_big", {"database": {"version": "17", "elastic_cluster_size": 21}}, "database"),
    ("create_without_admin_secret", {"create_database": True}, "database"),
    ("create_with_admin_secret", {"create_database": True, "database": {"administrator_password_secret_name": "ferry-pg-admin"}}, None),
    ("extensions_without_hll", {"database": {"extensions": ["pg_stat_statements"]}}, "database"),
    ("zone_redundant_on_lrs", {"zone_redundant": True, "storage_replication_type": "LRS"}, "zone_redundant"),
    ("retention_too_short", {"log_retention_in_days": 7}, "log_retention_in_days"),
    ("alert_email_malformed", {"alert_emails": ["ops"]}, "alert_emails"),
    ("cors_origins", {"query_cors_origins": ["https://shop.example", "http://localhost:5173"]}, None),
    ("cors_any_origin", {"query_cors_origins": ["*"]}, None),
    ("cors_origin_with_trailing_slash", {"query_cors_origins": ["https://shop.example/"]}, "query_cors_origins"),
    ("cors_origin_without_scheme", {"query_cors_origins": ["shop.example"]}, "query_cors_origins"),
    ("cors_origins_joined_by_hand", {"query_cors_origins": ["https://a.example,https://b.example"]}, "query_cors_origins"),
    ("query_database_url_setting", {"functions": {"query": {"app_settings": {"DATABASE_URL": "postgres://u:p@h/db"}}}}, "functions"),
    ("query_memory_not_a_flex_size", {"functions": {"query": {"instance_memory_in_mb": 1024}}}, "functions"),
    ("query_twenty_instances", {"functions": {"query": {"maximum_instance_count": 20}}}, None),
]


def hcl_value(value) -> str:
    """A Python value as an HCL expression (JSON is one, except for object keys)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {hcl_value(v)}' for k, v in value.items()) + "}"
    return json.dumps(value)


def test_input_validations_accept_and_reject_what_they_should(tmp_path):
    exe = terraform()
    shutil.copy(MODULE / "variables.tf", tmp_path / "variables.tf")
    runs = []
    for name, overrides, failing in VALIDATION_CASES:
        assigns = "\n".join(f"    {k} = {hcl_value(v)}" for k, v in overrides.items())
        expect = f"  expect_failures = [var.{failing}]\n" if failing else ""
        runs.append(f'run "{name}" {{\n  command = plan\n  variables {{\n{assigns}\n  }}\n{expect}}}\n')
    defaults = "\n".join(f"  {k} = {hcl_value(v)}" for k, v in VALID.items())
    (tmp_path / "validation.tftest.hcl").write_text(f"variables {{\n{defaults}\n}}\n\n" + "\n".join(runs))

    init = run([exe, "init", "-backend=false", "-input=false", "-no-color"], cwd=tmp_path)
    assert init.returncode == 0, init.stdout + init.stderr
    result = run([exe, "test", "-no-color"], cwd=tmp_path)
    outcomes = dict(re.findall(r'run "([^"]+)"\.\.\. (\w+)', result.stdout))
    assert outcomes == {name: "pass" for name, _, _ in VALIDATION_CASES}, result.stdout + result.stderr
    assert result.returncode == 0
