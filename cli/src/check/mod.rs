//! `weftctl check`, as `linkerd check` does: whether Weft can be installed on the cluster
//! (`--pre`) or whether it is healthy there, one line per check, each a pass, a warning or a
//! failure with what to do about it. Exit 1 when any check failed.
//!
//! It reads the cluster through kube-rs with the user's kubeconfig (or in-cluster config) and
//! changes nothing. Every call is bounded; what the calls return is judged by `rules`, which is
//! pure and tested without a cluster.

mod rules;

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use anyhow::{bail, Context as _};
use k8s_openapi::{
    api::{
        admissionregistration::v1::MutatingWebhookConfiguration,
        apps::v1::Deployment,
        authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        },
        core::v1::{ConfigMap, Namespace, Pod, Secret},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    api::{ListParams, PostParams},
    Api, Client,
};
use rules::{Line, PodMesh, Status};
use time::OffsetDateTime;
use weft_injector_core::DEFAULT_NAMESPACE;

/// How long one call to the API server may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The most pods listed per meshed namespace (a page); more are not looked at.
const POD_PAGE: u32 = 500;

#[derive(clap::Args, Debug)]
pub(crate) struct CheckArgs {
    /// Check that Weft can be installed (API server, version, permissions) rather than that it
    /// is installed and healthy.
    #[arg(long)]
    pre: bool,
    /// Weft's namespace.
    #[arg(long, short = 'n', default_value = DEFAULT_NAMESPACE)]
    namespace: String,
    /// The kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or the in-cluster config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Warn about a trust anchor or issuer that expires within this time.
    #[arg(long, default_value = "30d")]
    expiry_warning: humantime::Duration,
    /// `plain` (a line per check) or `json` (an array of checks).
    #[arg(long, default_value = "plain", value_parser = ["plain", "json"])]
    output: String,
}

pub(crate) fn run(args: CheckArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let lines = runtime.block_on(checks(&args));
    if args.output == "json" {
        say!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        print_plain(&lines);
    }
    let failed = lines.iter().filter(|l| l.status == Status::Fail).count();
    if failed > 0 {
        bail!("{failed} of {} checks failed", lines.len());
    }
    Ok(())
}

fn print_plain(lines: &[Line]) {
    let mut section = "";
    for line in lines {
        if line.section != section {
            if !section.is_empty() {
                say!();
            }
            section = line.section;
            say!("{section}");
            say!("{}", "-".repeat(section.len()));
        }
        let mark = match line.status {
            Status::Pass => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        say!("{mark} {}: {}", line.check, line.detail);
        if let Some(fix) = &line.fix {
            say!("     fix: {fix}");
        }
    }
    let (warned, failed) = lines.iter().fold((0, 0), |(w, f), l| match l.status {
        Status::Warn => (w + 1, f),
        Status::Fail => (w, f + 1),
        Status::Pass => (w, f),
    });
    say!();
    say!(
        "{} checks: {} passed, {warned} warnings, {failed} failed",
        lines.len(),
        lines.len() - warned - failed
    );
}

/// A call to the API server, bounded by [`CALL_TIMEOUT`]; a timeout is an error like any.
async fn call<T, F>(what: &str, fut: F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, kube::Error>>,
{
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {CALL_TIMEOUT:?}")),
    }
}

async fn client(args: &CheckArgs) -> anyhow::Result<Client> {
    crate::kubeconfig::client(args.kubeconfig.as_deref(), CALL_TIMEOUT).await
}

async fn checks(args: &CheckArgs) -> Vec<Line> {
    const API: &str = "kubernetes-api";
    let mut lines = Vec::new();
    let client = match client(args).await {
        Ok(c) => c,
        Err(e) => {
            lines.push(Line::fail(
                API,
                "a kubeconfig is usable",
                format!("{e:#}"),
                "give one with --kubeconfig or KUBECONFIG",
            ));
            return lines;
        }
    };
    match call("GET /version", client.apiserver_version()).await {
        Ok(info) => {
            lines.push(Line::pass(API, "the API server answers", "GET /version"));
            lines.push(rules::version(&info.major, &info.minor, &info.git_version));
        }
        Err(e) => {
            lines.push(Line::fail(
                API,
                "the API server answers",
                e,
                "check the kubeconfig's server and credentials, and that the cluster is up",
            ));
            return lines;
        }
    }
    if args.pre {
        lines.extend(permissions(&client, &args.namespace).await);
    } else {
        lines.extend(installed(&client, args).await);
    }
    lines
}

/// `--pre`: may the caller create what the chart installs (namespaced kinds in `namespace`)?
async fn permissions(client: &Client, namespace: &str) -> Vec<Line> {
    const SECTION: &str = "pre-install";
    let needed: [(&str, &str, bool); 11] = [
        ("", "namespaces", false),
        ("", "serviceaccounts", true),
        ("", "services", true),
        ("", "secrets", true),
        ("", "configmaps", true),
        ("apps", "deployments", true),
        ("policy", "poddisruptionbudgets", true),
        ("rbac.authorization.k8s.io", "clusterroles", false),
        ("rbac.authorization.k8s.io", "clusterrolebindings", false),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            false,
        ),
        ("apiextensions.k8s.io", "customresourcedefinitions", false),
    ];
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut refused = Vec::new();
    let mut errors = Vec::new();
    for (group, resource, namespaced) in needed {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    verb: Some("create".into()),
                    namespace: namespaced.then(|| namespace.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let name = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        match call(
            &format!("SelfSubjectAccessReview create {name}"),
            reviews.create(&PostParams::default(), &review),
        )
        .await
        {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => refused.push(name),
            Err(e) => errors.push(e),
        }
    }
    let check = "may create everything the chart installs";
    vec![if !errors.is_empty() {
        Line::fail(
            SECTION,
            check,
            errors.join("; "),
            "check the API server and your credentials",
        )
    } else if refused.is_empty() {
        Line::pass(SECTION, check, "create allowed on all 11 kinds")
    } else {
        Line::fail(
            SECTION,
            check,
            format!("create refused on {}", refused.join(", ")),
            "install as a cluster administrator (the chart makes cluster-wide RBAC, a webhook and CRDs)",
        )
    }]
}

/// Weft installed in `args.namespace`: CRDs, control plane, injector, webhook, identity and
/// the data plane.
async fn installed(client: &Client, args: &CheckArgs) -> Vec<Line> {
    let ns = args.namespace.as_str();
    let now = OffsetDateTime::now_utc();
    let mut lines = Vec::new();

    // CRDs.
    const CRDS: &str = "weft-crds";
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (name, required) in [
        ("httpfaults.weft.dev", true),
        ("authorizationpolicies.weft.dev", true),
        ("httproutes.gateway.networking.k8s.io", false),
    ] {
        let check = format!("the CRD {name} is installed");
        lines.push(match call(&format!("get CRD {name}"), crds.get_opt(name)).await {
            Ok(Some(_)) => Line::pass(CRDS, check, "present"),
            Ok(None) if required => Line::fail(
                CRDS,
                check,
                "missing",
                "install the chart again (Helm installs helm/weft/crds) or kubectl apply -f helm/weft/crds/",
            ),
            Ok(None) => Line::warn(
                CRDS,
                check,
                "missing: HTTPRoutes (routes, canaries, timeouts, retries) cannot be used",
                "install the Gateway API's standard channel CRDs",
            ),
            Err(e) => Line::fail(CRDS, check, e, "check your permissions to read CRDs"),
        });
    }

    // The control plane and the injector.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let mut control_plane_version = None;
    let mut issuer_secret = None;
    for (section, name) in [
        ("weft-control-plane", "weft-control-plane"),
        ("weft-injector", "weft-injector"),
    ] {
        let found = match call(
            &format!("get deployment {ns}/{name}"),
            deployments.get_opt(name),
        )
        .await
        {
            Ok(d) => d,
            Err(e) => {
                lines.push(Line::fail(
                    section,
                    format!("{name} is ready"),
                    e,
                    "check your permissions",
                ));
                continue;
            }
        };
        if name == "weft-control-plane" {
            control_plane_version = found.as_ref().and_then(|d| {
                d.metadata
                    .labels
                    .as_ref()?
                    .get("app.kubernetes.io/version")
                    .cloned()
            });
            issuer_secret = found.as_ref().and_then(issuer_source);
        }
        let replicas = found.as_ref().map(|d| {
            let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            (wanted, ready)
        });
        let mut line = rules::deployment(section, name, ns, replicas);
        if name == "weft-injector" && line.status == Status::Fail && found.is_some() {
            let policy = webhook_failure_policy(client).await;
            line.detail = format!(
                "{}: {}",
                line.detail,
                rules::injector_down_consequence(policy.as_deref())
            );
        }
        lines.push(line);
    }

    // The webhook's caBundle against the serving certificate.
    lines.push(webhook_ca(client, ns, now).await);

    // Identity: the anchors and the issuer.
    const IDENTITY: &str = "weft-identity";
    let warn = Duration::from(args.expiry_warning);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let anchors = match call(
        "get the trust anchors",
        config_maps.get_opt("weft-trust-anchors"),
    )
    .await
    {
        Ok(Some(cm)) => cm.data.and_then(|d| d.get("anchors.pem").cloned()),
        Ok(None) => None,
        Err(e) => {
            lines.push(Line::fail(
                IDENTITY,
                "the trust anchors are readable",
                e,
                "check your permissions",
            ));
            None
        }
    };
    match &anchors {
        Some(pem) => lines.push(rules::expiry(
            IDENTITY,
            "trust anchor",
            pem.as_bytes(),
            now,
            warn.saturating_mul(2),
            "make a new anchor (weftctl certs create-anchor), install it beside the old one, then roll every proxy",
        )),
        None => lines.push(Line::fail(
            IDENTITY,
            "the trust anchor is valid",
            format!("no ConfigMap {ns}/weft-trust-anchors with anchors.pem"),
            "install the chart with identity.trustAnchorsPEM",
        )),
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let (secret_name, crt_key) =
        issuer_secret.unwrap_or_else(|| ("weft-identity-issuer".into(), "issuer.crt".into()));
    let issuer = match call(
        &format!("get secret {ns}/{secret_name}"),
        secrets.get_opt(&secret_name),
    )
    .await
    {
        Ok(Some(s)) => s.data.and_then(|d| d.get(&crt_key).map(|b| b.0.clone())),
        Ok(None) => None,
        Err(e) => {
            lines.push(Line::fail(
                IDENTITY,
                "the identity issuer is readable",
                e,
                "check your permissions to read Secrets",
            ));
            None
        }
    };
    match (&issuer, &anchors) {
        (Some(crt), anchors) => {
            lines.push(rules::expiry(
                IDENTITY,
                "identity issuer",
                crt,
                now,
                warn,
                "make a new issuer under the anchor (weftctl certs create-issuer) and put it in the Secret; the control plane reloads it",
            ));
            if let Some(anchors) = anchors {
                let check = "the issuer is signed by a trust anchor";
                lines.push(match rules::issuer_under_anchors(crt, anchors.as_bytes()) {
                    Ok(()) => Line::pass(IDENTITY, check, "yes"),
                    Err(e) => Line::fail(
                        IDENTITY,
                        check,
                        e,
                        "make the issuer under one of the installed anchors",
                    ),
                });
            }
        }
        (None, _) => lines.push(Line::fail(
            IDENTITY,
            "the identity issuer is valid",
            format!("no Secret {ns}/{secret_name} with {crt_key}"),
            "install the chart with identity.issuer (crtPEM and keyPEM, or existingSecret)",
        )),
    }

    // The data plane: meshed namespaces' pods.
    match meshed_pods(client).await {
        Ok(pods) => {
            lines.push(rules::unmeshed(&pods));
            lines.push(rules::proxy_versions(
                &pods,
                control_plane_version.as_deref(),
            ));
        }
        Err(e) => lines.push(Line::fail(
            "weft-data-plane",
            "meshed namespaces' pods are readable",
            e,
            "check your permissions to list namespaces and pods",
        )),
    }
    lines
}

/// The Secret and key the control plane's `issuer` volume reads `issuer.crt` from.
fn issuer_source(d: &Deployment) -> Option<(String, String)> {
    let volumes = d.spec.as_ref()?.template.spec.as_ref()?.volumes.as_ref()?;
    let projected = volumes
        .iter()
        .find(|v| v.name == "issuer")?
        .projected
        .as_ref()?;
    projected.sources.as_ref()?.iter().find_map(|s| {
        let secret = s.secret.as_ref()?;
        let key = secret
            .items
            .as_ref()?
            .iter()
            .find(|i| i.path == "issuer.crt")?
            .key
            .clone();
        Some((secret.name.clone(), key))
    })
}

/// The first webhook's `failurePolicy`, if the configuration is there.
async fn webhook_failure_policy(client: &Client) -> Option<String> {
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let config = call("get the webhook", hooks.get_opt("weft-injector"))
        .await
        .ok()??;
    config.webhooks?.first()?.failure_policy.clone()
}

async fn webhook_ca(client: &Client, ns: &str, now: OffsetDateTime) -> Line {
    const SECTION: &str = "weft-injector";
    const CHECK: &str = "the webhook's caBundle verifies the injector's certificate";
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let config = match call("get the webhook", hooks.get_opt("weft-injector")).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Line::fail(
                SECTION,
                CHECK,
                "no MutatingWebhookConfiguration weft-injector",
                "install the chart",
            )
        }
        Err(e) => return Line::fail(SECTION, CHECK, e, "check your permissions"),
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let serving = match call(
        "get the serving certificate",
        secrets.get_opt("weft-injector-tls"),
    )
    .await
    {
        Ok(Some(s)) => s.data.and_then(|d| d.get("tls.crt").map(|b| b.0.clone())),
        Ok(None) => None,
        Err(e) => return Line::fail(SECTION, CHECK, e, "check your permissions to read Secrets"),
    };
    let Some(serving) = serving else {
        return Line::fail(
            SECTION,
            CHECK,
            format!("no Secret {ns}/weft-injector-tls with tls.crt"),
            "install the chart again, or let cert-manager issue it (injector.certificate.source)",
        );
    };
    let server_name = format!("weft-injector.{ns}.svc");
    let mut problems = Vec::new();
    for hook in config.webhooks.unwrap_or_default() {
        let bundle = hook
            .client_config
            .ca_bundle
            .map(|b| b.0)
            .unwrap_or_default();
        if let Err(e) = rules::ca_bundle_verifies(&bundle, &serving, &server_name, now) {
            problems.push(format!("{}: {e}", hook.name));
        }
    }
    if problems.is_empty() {
        Line::pass(SECTION, CHECK, format!("for {server_name}"))
    } else {
        Line::fail(
            SECTION,
            CHECK,
            problems.join("; "),
            "upgrade the chart so that it writes both again (helm upgrade), or fix cert-manager's CA injection",
        )
    }
}

/// Every pod of the namespaces labelled `weft.dev/inject=enabled`, with the version that
/// injected it, leaving out pods that opted out, host-network pods and finished ones.
async fn meshed_pods(client: &Client) -> Result<Vec<PodMesh>, String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labelled = call(
        "list meshed namespaces",
        namespaces.list(&ListParams::default().labels("weft.dev/inject=enabled")),
    )
    .await?;
    let names: BTreeSet<String> = labelled
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let mut out = Vec::new();
    for ns in names {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let list = call(
            &format!("list pods in {ns}"),
            pods.list(&ListParams::default().limit(POD_PAGE)),
        )
        .await?;
        for pod in list.items {
            let annotations = pod.metadata.annotations.clone().unwrap_or_default();
            let spec = pod.spec.as_ref();
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if annotations.get("weft.dev/inject").map(String::as_str) == Some("disabled")
                || spec.and_then(|s| s.host_network) == Some(true)
                || matches!(phase, Some("Succeeded" | "Failed"))
            {
                continue;
            }
            out.push(PodMesh {
                namespace: ns.clone(),
                name: pod.metadata.name.unwrap_or_default(),
                injected: annotations.get("weft.dev/injected").cloned(),
            });
        }
    }
    Ok(out)
}
