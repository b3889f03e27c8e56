//! The SpinAppExecutor reconciler: a finalizer blocks deleting an executor
//! while SpinApps in the same namespace use it, and the status reports
//! whether the executor's RuntimeClass exists. With `installDefaultCACerts`
//! it creates the namespace's CA bundle Secret once.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};

use super::{Context, Error, object_key, retry_after};
use crate::api::{SpinApp, SpinAppExecutor, SpinAppExecutorStatus};
use crate::apply::{FIELD_MANAGER, apply_params};
use crate::model::DEFAULT_CA_SECRET;
use crate::render::ca_bundle::{ca_bundle_secret, mozilla_ca_bundle};

/// The finalizer on executors (spin-operator compatible).
pub const FINALIZER: &str = "core.spinkube.dev/finalizer";
/// The executor condition about its RuntimeClass.
pub const RUNTIME_CLASS_FOUND: &str = "RuntimeClassFound";

const CONTROLLER: &str = "spinappexecutor";

/// Reconcile one SpinAppExecutor.
pub async fn reconcile(executor: Arc<SpinAppExecutor>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let ns = executor
        .namespace()
        .ok_or(Error::IncompleteObject("metadata.namespace"))?;
    ctx.caches_synced().await?;
    let api: Api<SpinAppExecutor> = ctx.api(&ns);
    let key = backoff_key(executor.as_ref());
    let result = finalizer(&api, FINALIZER, executor, |event| async {
        match event {
            Finalizer::Apply(executor) => apply(&executor, &ctx).await,
            Finalizer::Cleanup(executor) => cleanup(&executor, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        // Keep the domain error visible (metrics label, log).
        kube::runtime::finalizer::Error::CleanupFailed(inner)
        | kube::runtime::finalizer::Error::ApplyFailed(inner) => inner,
        other => Error::Finalizer(Box::new(other)),
    });
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

/// Error policy: per-object exponential backoff (a steady 5 s poll while
/// deletion waits for apps to go away).
pub fn error_policy(executor: Arc<SpinAppExecutor>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after(&ctx, &backoff_key(executor.as_ref()), error, CONTROLLER)
}

/// The executor's key in the backoff tracker it shares with the apps: its
/// own prefix, so that an app of the same name keeps a backoff of its own.
/// Recording and resetting must use this one key (they used two, so an
/// executor's backoff never reset and its success reset the app's).
fn backoff_key(executor: &SpinAppExecutor) -> String {
    format!("executor:{}", object_key(executor))
}

async fn apply(executor: &SpinAppExecutor, ctx: &Context) -> Result<Action, Error> {
    ensure_ca_bundle(executor, ctx).await?;
    let condition = match executor
        .spec
        .deployment_config
        .as_ref()
        .and_then(|d| d.runtime_class_name.as_deref())
    {
        Some(rc) => {
            let exists = Api::<RuntimeClass>::all(ctx.client.clone())
                .get_opt(rc)
                .await
                .map_err(|source| Error::Kube {
                    what: format!("reading RuntimeClass {rc}"),
                    source,
                })?
                .is_some();
            if exists {
                (
                    "True",
                    "RuntimeClassFound",
                    format!("RuntimeClass {rc} exists"),
                )
            } else {
                (
                    "False",
                    "RuntimeClassNotFound",
                    format!(
                        "RuntimeClass {rc} does not exist; install containerd-shim-spin on the nodes and create the RuntimeClass (handler spin), or fix runtimeClassName"
                    ),
                )
            }
        }
        None => (
            "True",
            "NotRequired",
            "the executor does not use a RuntimeClass".to_owned(),
        ),
    };
    let (status, reason, message) = condition;
    let previous = executor
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == RUNTIME_CLASS_FOUND));
    if previous.is_some_and(|c| c.status == status && c.reason == reason && c.message == message) {
        return Ok(Action::requeue(ctx.config.resync_interval));
    }
    if status == "False" {
        ctx.publish(
            &executor.object_ref(&()),
            EventType::Warning,
            reason,
            message.clone(),
            None,
        )
        .await;
    }
    let last_transition_time = previous
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    let new_status = SpinAppExecutorStatus {
        conditions: vec![Condition {
            type_: RUNTIME_CLASS_FOUND.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time,
            observed_generation: executor.metadata.generation,
        }],
    };
    let patch = serde_json::json!({
        "apiVersion": SpinAppExecutor::api_version(&()),
        "kind": SpinAppExecutor::kind(&()),
        "status": new_status,
    });
    let ns = executor.namespace().unwrap_or_default();
    let name = executor.name_any();
    ctx.api::<SpinAppExecutor>(&ns)
        .patch_status(&name, &apply_params(), &Patch::Apply(&patch))
        .await
        .map_err(|source| Error::Kube {
            what: format!("writing status of SpinAppExecutor {ns}/{name}"),
            source,
        })?;
    Ok(Action::requeue(ctx.config.resync_interval))
}

/// `installDefaultCACerts`: create the CA Secret the executor's apps mount
/// (`caCertSecret`, default `spin-ca`) when it is missing. An existing Secret of
/// that name is never touched: it may be the user's own bundle, or one made by
/// another executor in the namespace.
async fn ensure_ca_bundle(executor: &SpinAppExecutor, ctx: &Context) -> Result<(), Error> {
    let Some(config) = executor.spec.deployment_config.as_ref() else {
        return Ok(());
    };
    if config.install_default_ca_certs != Some(true) {
        return Ok(());
    }
    let name = match config.ca_cert_secret.as_deref() {
        Some(n) if !n.is_empty() => n,
        _ => DEFAULT_CA_SECRET,
    };
    let ns = executor.namespace().unwrap_or_default();
    let api: Api<Secret> = ctx.api(&ns);
    // Metadata only: the values are not needed to know it exists.
    let existing = api
        .get_metadata_opt(name)
        .await
        .map_err(|source| Error::Kube {
            what: format!("reading Secret {ns}/{name}"),
            source,
        })?;
    if existing.is_some() {
        return Ok(());
    }
    let secret = ca_bundle_secret(&ns, name, &executor.name_any(), &mozilla_ca_bundle());
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    match api.create(&params, &secret).await {
        Ok(_) => {
            ctx.publish(
                &executor.object_ref(&()),
                EventType::Normal,
                "CABundleCreated",
                format!(
                    "created Secret {name} with {} Mozilla root certificates (installDefaultCACerts); apps mount it at /etc/ssl/certs/ca-certificates.crt",
                    webpki_root_certs::TLS_SERVER_ROOT_CERTS.len()
                ),
                None,
            )
            .await;
            Ok(())
        }
        // Someone created it between the read and the write: theirs stays.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::Kube {
            what: format!("creating CA Secret {ns}/{name}"),
            source,
        }),
    }
}

/// Allow deletion only when no SpinApp in the namespace names the executor.
async fn cleanup(executor: &SpinAppExecutor, ctx: &Context) -> Result<Action, Error> {
    let ns = executor.namespace().unwrap_or_default();
    let name = executor.name_any();
    // A live list (not the cache): an app created a moment ago must block too.
    // `spec.executor` is a selectable field of the SpinApp CRD.
    let params = ListParams::default().fields(&format!("spec.executor={name}"));
    let apps = ctx
        .api::<SpinApp>(&ns)
        .list_metadata(&params)
        .await
        .map_err(|source| Error::Kube {
            what: format!("listing SpinApps using executor {ns}/{name}"),
            source,
        })?;
    let users: Vec<String> = apps.items.iter().map(|a| a.name_any()).collect();
    if users.is_empty() {
        tracing::info!(executor = %format!("{ns}/{name}"), "no SpinApp uses the executor; allowing deletion");
        return Ok(Action::await_change());
    }
    let shown = if users.len() > 10 {
        format!("{} and {} more", users[..10].join(", "), users.len() - 10)
    } else {
        users.join(", ")
    };
    ctx.publish(
        &executor.object_ref(&()),
        EventType::Warning,
        "ExecutorInUse",
        format!(
            "deletion waits until no SpinApp in namespace {ns} uses this executor; still used by: {shown}. Delete those SpinApps or point them at another executor"
        ),
        None,
    )
    .await;
    Err(Error::ExecutorInUse(shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executor_backoff_is_its_own_and_resets() {
        let executor = SpinAppExecutor {
            metadata: kube::api::ObjectMeta {
                name: Some("same".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Default::default(),
            status: None,
        };
        let backoff = super::super::backoff::Backoff::default();
        backoff.failed("ns/same"); // an app of the same name
        backoff.failed(&backoff_key(&executor));
        backoff.succeeded(&backoff_key(&executor));
        assert_eq!(backoff.failures(&backoff_key(&executor)), 0);
        assert_eq!(
            backoff.failures("ns/same"),
            1,
            "the app keeps its own backoff"
        );
    }
}
