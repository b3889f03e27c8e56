//! The SpinApp reconciler.
//!
//! 1. Read what the app needs: its executor and RuntimeClass (from caches),
//!    the Secrets and ConfigMaps it references (GET, only those); with image
//!    resolution on, its `imagePullSecrets` (GET) and the image decision
//!    ([`crate::oci::app::resolve_app_image`]): the pod runs the
//!    digest-pinned image; when no image could be resolved, nothing is
//!    applied (`ImageResolved=False`); on a registry error with an earlier
//!    digest in the status, that digest keeps running and the registry is
//!    asked again with backoff.
//! 2. Build the model. On problems: report them (conditions, one Warning event
//!    per new problem) and leave every existing child alone, so a broken
//!    change never takes a running app down.
//! 3. Otherwise render and apply, in order: runtime-config Secret, Deployment
//!    (or delete the one Spindle made when the executor runs without one),
//!    Service; then delete stale Secrets of earlier renders.
//! 4. Write the status (server-side apply on `/status`) if it changed.
//!
//! Nothing is written when nothing changed: children are compared with the
//! cache first ([`crate::apply::apply`]) and the status with the object's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Patch;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::legacy::AppGroup;
use super::{Context, Error, object_key, retry_after};
use crate::api::compat::LegacySpinApp;
use crate::api::{SpinApp, SpinAppStatus};
use crate::apply::{self, APP_NAME_LABEL, Applied, MANAGED_BY, MANAGED_BY_LABEL, apply_params};
use crate::model::{self, App, Inputs, Problems};
use crate::oci::app::{IMAGE_RESOLVED, ImageDecision, resolve_app_image};
use crate::render;
use crate::status::{self, ConditionProblem, Outcome};

const CONTROLLER: &str = "spinapp";

/// Reconcile one SpinApp.
pub async fn reconcile(app: Arc<SpinApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(ctx.group.controller());
    let key = object_key(app.as_ref());
    let span =
        tracing::info_span!("reconcile", object = %key, generation = app.metadata.generation);
    let result = tracing::Instrument::instrument(reconcile_inner(&app, &ctx), span).await;
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

/// Error policy: per-object exponential backoff.
pub fn error_policy(app: Arc<SpinApp>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_after(&ctx, &object_key(app.as_ref()), error, CONTROLLER)
}

async fn reconcile_inner(app: &SpinApp, ctx: &Context) -> Result<Action, Error> {
    let ns = app
        .namespace()
        .ok_or(Error::IncompleteObject("metadata.namespace"))?;
    let name = app.name_any();
    let uid = app.uid().ok_or(Error::IncompleteObject("metadata.uid"))?;
    ctx.caches_synced().await?;
    if app.meta().deletion_timestamp.is_some() {
        // Children carry ownerReferences: the garbage collector removes them.
        ctx.references.remove(&ns, &name);
        return Ok(Action::await_change());
    }
    // The same name in the other API group renders the same children: the
    // older object keeps them, this one writes none (see `legacy`).
    if let Some(conflict) = super::legacy::name_conflict(app, ctx).await? {
        let image = ImageState {
            decision: ImageDecision::Disabled,
            note: None,
        };
        report(app, ctx, std::slice::from_ref(&conflict), &image).await?;
        return Err(Error::Blocked(conflict.message));
    }

    // 1. Inputs.
    let refs = model::references(app);
    let pull_secrets = pull_secret_names(app, ctx);
    if pull_secrets.is_empty() {
        ctx.references.set(&ns, &name, &refs);
    } else {
        // A pull secret that appears or changes triggers a new resolve.
        let mut watched = refs.clone();
        watched.secrets.extend(pull_secrets.iter().cloned());
        ctx.references.set(&ns, &name, &watched);
    }
    let executor = ctx
        .executors
        .get(&ObjectRef::new(&app.spec.executor).within(&ns));
    let runtime_class_exists = executor
        .as_ref()
        .and_then(|e| e.spec.deployment_config.as_ref())
        .and_then(|d| d.runtime_class_name.as_deref())
        .map(|rc| ctx.runtime_classes.get(&ObjectRef::new(rc)).is_some());
    let secrets = fetch_all::<Secret>(ctx, &ns, &refs.secrets).await?;
    let config_maps = fetch_all::<ConfigMap>(ctx, &ns, &refs.config_maps).await?;
    let image = resolve_image(app, ctx, &ns, &pull_secrets).await?;
    let inputs = Inputs {
        app,
        executor: executor.as_deref(),
        runtime_class_exists,
        secrets: &secrets,
        config_maps: &config_maps,
    };

    // 2. Model.
    let mut model = match App::build(&inputs) {
        Ok(model) => model,
        Err(problems) => return report_problems(app, ctx, &problems, &image).await,
    };
    match &image.decision {
        ImageDecision::Failed(error) => {
            // Nothing runnable: leave every child alone.
            let problems = [ConditionProblem {
                condition_type: IMAGE_RESOLVED.into(),
                reason: error.reason().to_owned(),
                message: image.message().unwrap_or_else(|| error.to_string()),
            }];
            report(app, ctx, &problems, &image).await?;
            return match image.decision.retry_error() {
                Some(error) => Err(Error::Image(error.to_string())),
                // Only a spec change or new registry content fixes it.
                None => Ok(Action::requeue(ctx.config.resync_interval)),
            };
        }
        decision => {
            if let Some(resolved) = decision.image() {
                model.image = resolved.image.clone();
            }
        }
    }

    // 3. Children. Scale to zero first decides the replica count (and puts
    // the activator in the path before a scale-down).
    let plan = super::scale_to_zero::prepare(app, ctx, &mut model).await?;
    match apply_children(app, ctx, &model, &uid).await {
        Ok((deployment, outcome)) => {
            let scaled = super::scale_to_zero::finish(plan, app, ctx).await?;
            let scaled_ = Some(&scaled);
            write_status(app, ctx, &outcome, deployment.as_ref(), &image, scaled_).await?;
            announce_image(app, ctx, &image).await;
            if let Some(error) = image.decision.retry_error() {
                // Stale: the last digest runs; ask the registry again soon.
                return Err(Error::Image(error.to_string()));
            }
            tracing::debug!(object = %object_key(app), "reconciled");
            // A tag with a refresh interval is re-resolved on that interval.
            let resync = ctx.config.resync_interval;
            Ok(Action::requeue(scaled.requeue(match image.decision {
                ImageDecision::Disabled => resync,
                _ => crate::oci::app::requeue_after(app, resync),
            })))
        }
        Err(Error::Apply(apply::Error::NotOwned { kind, name: child })) => {
            let problem = ConditionProblem {
                condition_type: status::READY.into(),
                reason: format!("{kind}NameConflict"),
                message: apply::Error::NotOwned { kind, name: child }.to_string(),
            };
            let problems = [problem];
            report(app, ctx, &problems, &image).await?;
            Err(Error::Blocked(problems[0].message.clone()))
        }
        Err(error) => {
            ctx.publish(
                &ctx.regarding(app),
                EventType::Warning,
                "ReconcileFailed",
                format!("{error}; retrying with backoff"),
                None,
            )
            .await;
            Err(error)
        }
    }
}

/// The outcome of image resolution for one reconcile.
struct ImageState {
    decision: ImageDecision,
    /// Appended to the `ImageResolved` message (missing pull secrets).
    note: Option<String>,
}

impl ImageState {
    /// The `ImageResolved` message, with the note.
    fn message(&self) -> Option<String> {
        let (_, _, mut message) = self.decision.condition()?;
        if let Some(note) = &self.note {
            message.push_str("; ");
            message.push_str(note);
        }
        Some(message)
    }
}

/// Read the app's `imagePullSecrets` (a missing one means no credentials
/// from it) and decide which image to run. Only reads Secrets when
/// resolution is enabled.
async fn resolve_image(
    app: &SpinApp,
    ctx: &Context,
    ns: &str,
    names: &BTreeSet<String>,
) -> Result<ImageState, Error> {
    let Some(resolver) = ctx.config.resolver.as_deref() else {
        return Ok(ImageState {
            decision: ImageDecision::Disabled,
            note: None,
        });
    };
    let found = fetch_all::<Secret>(ctx, ns, names).await?;
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !found.contains_key(*n))
        .map(String::as_str)
        .collect();
    let note = (!missing.is_empty()).then(|| {
        format!(
            "imagePullSecret(s) {} not found, used without credentials",
            missing.join(", ")
        )
    });
    let pull_secrets: Vec<Secret> = found.into_values().collect();
    let decision = resolve_app_image(Some(resolver), app, &pull_secrets).await;
    Ok(ImageState { decision, note })
}

/// The app's `imagePullSecrets` names; empty when resolution is disabled
/// (the kubelet then reads them, not Spindle).
fn pull_secret_names(app: &SpinApp, ctx: &Context) -> BTreeSet<String> {
    if ctx.config.resolver.is_none() {
        return BTreeSet::new();
    }
    app.spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Events about image resolution: a Normal event naming the format when the
/// resolved image changed, a Warning when a registry error keeps the last
/// digest running (once per new error).
async fn announce_image(app: &SpinApp, ctx: &Context, image: &ImageState) {
    let regarding = ctx.regarding(app);
    match &image.decision {
        ImageDecision::Resolved {
            image: resolved,
            changed: true,
        } => {
            ctx.publish(
                &regarding,
                EventType::Normal,
                "ImageResolved",
                format!(
                    "{} resolved to {} ({})",
                    app.spec.image, resolved.image, resolved.format
                ),
                None,
            )
            .await;
        }
        ImageDecision::Stale { error, .. } => {
            let problem = ConditionProblem {
                condition_type: IMAGE_RESOLVED.into(),
                reason: error.reason().to_owned(),
                message: image.message().unwrap_or_default(),
            };
            if !status::new_problems(app.status.as_ref(), std::slice::from_ref(&problem)).is_empty()
            {
                ctx.publish(
                    &regarding,
                    EventType::Warning,
                    &problem.reason,
                    problem.message,
                    None,
                )
                .await;
            }
        }
        _ => {}
    }
}

/// GET each named object; missing ones are left out of the map.
async fn fetch_all<K>(
    ctx: &Context,
    ns: &str,
    names: &BTreeSet<String>,
) -> Result<BTreeMap<String, K>, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = ctx.api(ns);
    let mut out = BTreeMap::new();
    for name in names {
        let obj = api.get_opt(name).await.map_err(|source| Error::Kube {
            what: format!("reading {} {ns}/{name}", K::kind(&())),
            source,
        })?;
        if let Some(obj) = obj {
            out.insert(name.clone(), obj);
        }
    }
    Ok(out)
}

/// Conditions + Warning events for problems; children are left untouched.
async fn report_problems(
    app: &SpinApp,
    ctx: &Context,
    problems: &Problems,
    image: &ImageState,
) -> Result<Action, Error> {
    let shown: Vec<ConditionProblem> = problems
        .iter()
        .map(|p| ConditionProblem {
            condition_type: p.condition_type().to_owned(),
            reason: p.reason().to_owned(),
            message: p.message(),
        })
        .collect();
    report(app, ctx, &shown, image).await?;
    if problems.is_transient() {
        // Something may appear later (an executor, a Secret). The watches
        // usually trigger first; the backoff is the safety net.
        Err(Error::Blocked(problems.summary()))
    } else {
        // Only a spec change can fix it, and that triggers a reconcile.
        tracing::info!(object = %object_key(app), problems = %problems.summary(), "app spec has problems");
        Ok(Action::await_change())
    }
}

async fn report(
    app: &SpinApp,
    ctx: &Context,
    problems: &[ConditionProblem],
    image: &ImageState,
) -> Result<(), Error> {
    let regarding = ctx.regarding(app);
    for p in status::new_problems(app.status.as_ref(), problems) {
        ctx.publish(
            &regarding,
            EventType::Warning,
            &p.reason,
            p.message.clone(),
            None,
        )
        .await;
    }
    // Only a Deployment this app owns (not one of a same-named rival's).
    let deployment = ctx
        .deployments
        .get(&ObjectRef::new(&app.name_any()).within(&app.namespace().unwrap_or_default()))
        .filter(|d| {
            app.uid()
                .is_some_and(|uid| apply::is_owned_by(d.as_ref(), &uid))
        });
    write_status(
        app,
        ctx,
        &Outcome::Blocked(problems),
        deployment.as_deref(),
        image,
        None,
    )
    .await
}

/// Apply the rendered children; returns the newest Deployment and the outcome for the status.
async fn apply_children(
    app: &SpinApp,
    ctx: &Context,
    model: &App,
    uid: &str,
) -> Result<(Option<Deployment>, Outcome<'static>), Error> {
    let ns = model.namespace.as_str();
    let regarding = ctx.regarding(app);
    let rendered = render::render(model);

    // Runtime-config Secret first: the Deployment mounts it.
    let secret_name = match rendered.runtime_config_secret {
        Some(secret) => {
            let secret = normalize_secret(prepare(secret, app, ctx));
            let name = secret.name_any();
            let cached = ctx
                .secrets
                .get(&ObjectRef::new(&name).within(ns))
                .map(|s| (*s).clone());
            let applied = apply::apply(&ctx.api::<Secret>(ns), secret, cached, uid).await?;
            announce(ctx, &regarding, "Secret", &applied).await;
            Some(name)
        }
        None => None,
    };

    // Deployment, or none.
    let deployment = match rendered.deployment {
        Some(deployment) => {
            let deployment =
                super::scale_to_zero::decorate_deployment(prepare(deployment, app, ctx), app);
            let name = deployment.name_any();
            let cached = ctx
                .deployments
                .get(&ObjectRef::new(&name).within(ns))
                .map(|d| (*d).clone());
            let applied = apply::apply(&ctx.api::<Deployment>(ns), deployment, cached, uid).await?;
            announce(ctx, &regarding, "Deployment", &applied).await;
            Some(applied.into_object())
        }
        None => {
            // createDeployment: false. Remove the Deployment Spindle made before, if any.
            if let Some(old) = ctx.deployments.get(&ObjectRef::new(&model.name).within(ns))
                && apply::is_controlled_by(old.as_ref(), uid)
                && apply::delete_if_owned(&ctx.api::<Deployment>(ns), old.as_ref(), uid).await?
            {
                deleted(ctx, &regarding, old.as_ref()).await;
            }
            None
        }
    };

    // Service.
    let service = prepare(rendered.service, app, ctx);
    let service_name = service.name_any();
    let cached = ctx
        .services
        .get(&ObjectRef::new(&service_name).within(ns))
        .map(|s| (*s).clone());
    let applied = apply::apply(&ctx.api::<Service>(ns), service, cached, uid).await?;
    announce(ctx, &regarding, "Service", &applied).await;

    // Stale Secrets: spin-operator's `<app>-<hash>` Secrets, earlier
    // renders, or our runtime-config Secret once loadFromSecret is used.
    let stale: Vec<Arc<Secret>> = ctx
        .secrets
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(ns)
                && s.labels().get(APP_NAME_LABEL) == Some(&model.name)
                && Some(s.name_any()) != secret_name
                && apply::is_owned_by(s.as_ref(), uid)
        })
        .collect();
    for old in stale {
        if apply::delete_if_owned(&ctx.api::<Secret>(ns), old.as_ref(), uid).await? {
            deleted(ctx, &regarding, old.as_ref()).await;
        }
    }

    let selector = deployment
        .as_ref()
        .and_then(|d| d.spec.selector.match_labels.as_ref())
        .map(status::label_selector)
        .unwrap_or_else(|| render::labels::selector_string(&model.name));
    let outcome = Outcome::Applied {
        deployment_name: deployment.as_ref().map(|d| d.name_any()),
        selector,
        service_name,
    };
    Ok((deployment, outcome))
}

/// Make sure a rendered child carries the shared labels and the owner reference.
fn prepare<K: Resource<DynamicType = ()>>(mut obj: K, app: &SpinApp, ctx: &Context) -> K {
    let labels = obj.labels_mut();
    labels
        .entry(MANAGED_BY_LABEL.to_owned())
        .or_insert_with(|| MANAGED_BY.to_owned());
    labels
        .entry(APP_NAME_LABEL.to_owned())
        .or_insert_with(|| app.name_any());
    if obj.meta().namespace.is_none() {
        obj.meta_mut().namespace = app.namespace();
    }
    let uid = app.uid();
    // The render names the canonical group; the reference must name the
    // object the user applied (a legacy one too), or the garbage collector
    // deletes the child at once.
    obj.owner_references_mut()
        .retain(|r| Some(&r.uid) != uid.as_ref());
    if let Some(owner) = ctx.owner_ref(app) {
        obj.owner_references_mut().push(owner);
    }
    obj
}

/// Store `stringData` as `data`, as the apiserver does, so the applied object
/// compares equal to the stored one.
fn normalize_secret(mut secret: Secret) -> Secret {
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in string_data {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    secret
}

async fn announce<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    regarding: &ObjectReference,
    kind: &str,
    applied: &Applied<K>,
) {
    if let Some(verb) = applied.verb() {
        let obj = applied.object();
        let name = obj.meta().name.clone().unwrap_or_default();
        tracing::info!(object = %format!("{}/{}", regarding.namespace.as_deref().unwrap_or(""), regarding.name.as_deref().unwrap_or("")), kind, child = %name, "{}", verb.to_lowercase());
        ctx.publish(
            regarding,
            EventType::Normal,
            &format!("{kind}{verb}"),
            format!("{verb} {kind} {name}"),
            Some(obj.object_ref(&())),
        )
        .await;
    }
}

async fn deleted<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    regarding: &ObjectReference,
    obj: &K,
) {
    let kind = K::kind(&());
    let name = obj.meta().name.clone().unwrap_or_default();
    tracing::info!(kind = %kind, child = %name, "deleted");
    ctx.publish(
        regarding,
        EventType::Normal,
        &format!("{kind}Deleted"),
        format!("Deleted {kind} {name}, which the app no longer needs"),
        Some(obj.object_ref(&())),
    )
    .await;
}

/// Write the status with server-side apply, only when it changed.
async fn write_status(
    app: &SpinApp,
    ctx: &Context,
    outcome: &Outcome<'_>,
    deployment: Option<&Deployment>,
    image: &ImageState,
    scaled: Option<&super::scale_to_zero::Finished>,
) -> Result<(), Error> {
    let now = Time(Timestamp::now());
    let mut status = status::build(app, outcome, deployment, &now);
    if let Some(scaled) = scaled {
        status::set_scale_to_zero(&mut status, app, scaled.status.clone(), &now);
    }
    status::set_image(
        &mut status,
        app,
        &image.decision,
        image.note.as_deref(),
        &now,
    );
    if app.status.as_ref() == Some(&status) {
        return Ok(());
    }
    patch_status(ctx, app, &status).await
}

async fn patch_status(ctx: &Context, app: &SpinApp, status: &SpinAppStatus) -> Result<(), Error> {
    let ns = app.namespace().unwrap_or_default();
    let name = app.name_any();
    let patch = serde_json::json!({
        "apiVersion": ctx.group.api_version(),
        "kind": SpinApp::kind(&()),
        "status": status,
    });
    let (params, patch) = (apply_params(), Patch::Apply(&patch));
    // The status goes to the object the user applied, in its own group.
    let written = match ctx.group {
        AppGroup::Canonical => ctx
            .api::<SpinApp>(&ns)
            .patch_status(&name, &params, &patch)
            .await
            .map(drop),
        AppGroup::Legacy => ctx
            .api::<LegacySpinApp>(&ns)
            .patch_status(&name, &params, &patch)
            .await
            .map(drop),
    };
    written.map_err(|source| Error::Kube {
        what: format!("writing status of {} {ns}/{name}", ctx.group.display()),
        source,
    })
}

/// Report a problem found before the model could be built (a legacy object
/// that cannot be converted); children are left alone.
pub(super) async fn report_unconvertible(
    app: &SpinApp,
    ctx: &Context,
    problem: ConditionProblem,
) -> Result<Action, Error> {
    let image = ImageState {
        decision: ImageDecision::Disabled,
        note: None,
    };
    report(app, ctx, std::slice::from_ref(&problem), &image).await?;
    Ok(Action::await_change())
}
