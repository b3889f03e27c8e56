//! The SpinApp status: what the reconciler reports after it acted.
//!
//! Everything here is pure: [`build`] turns the reconcile outcome and the
//! observed Deployment into a [`SpinAppStatus`], keeping each condition's
//! `lastTransitionTime` when its status did not change, so that an unchanged
//! app produces an identical status and the reconciler can skip the write.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::api::{SpinApp, SpinAppStatus};
pub use crate::oci::app::IMAGE_RESOLVED;
use crate::oci::app::ImageDecision;

/// `Ready`: the desired spec runs (all pods of the current rollout are available).
pub const READY: &str = "Ready";
/// `Available`: copied from the Deployment.
pub const AVAILABLE: &str = "Available";
/// `Progressing`: copied from the Deployment.
pub const PROGRESSING: &str = "Progressing";
/// The spec itself is valid (checks the CRD's CEL rules cannot express).
pub const SPEC_VALID: &str = "SpecValid";
/// The app's SpinAppExecutor exists (and its RuntimeClass, if any).
pub const EXECUTOR_READY: &str = "ExecutorReady";
/// Every Secret and ConfigMap the app references exists and has the key.
pub const REFERENCES_RESOLVED: &str = "ReferencesResolved";
/// The runtime configuration could be rendered.
pub const RUNTIME_CONFIG_READY: &str = "RuntimeConfigReady";

/// The reason-specific condition types, in the order they appear in the status,
/// with the reason used when no problem of that type exists.
const CHECKS: [(&str, &str, &str); 4] = [
    (SPEC_VALID, "Valid", "the spec is valid"),
    (
        EXECUTOR_READY,
        "ExecutorFound",
        "the SpinAppExecutor exists",
    ),
    (
        REFERENCES_RESOLVED,
        "Resolved",
        "every referenced Secret and ConfigMap exists",
    ),
    (
        RUNTIME_CONFIG_READY,
        "Rendered",
        "the runtime configuration is rendered",
    ),
];

/// A reason the app could not be rendered, as shown in a condition.
///
/// The reconciler converts the model's problems into this shape; the message
/// must be safe to show (it never contains Secret values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionProblem {
    /// The condition this problem sets to False, e.g. `ExecutorReady`. `Ready`
    /// is allowed for problems that have no reason-specific condition.
    pub condition_type: String,
    /// CamelCase reason, e.g. `ExecutorNotFound`.
    pub reason: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// What the reconciler did this time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The app was rendered and its children applied.
    Applied {
        /// Name of the Deployment, or `None` when the executor runs the app
        /// without one (`createDeployment: false`).
        deployment_name: Option<String>,
        /// Label selector of the app's pods (`k=v,k=v`), for the scale subresource.
        selector: String,
        /// Name of the Service.
        service_name: String,
    },
    /// The spec could not be turned into children; existing children were left alone.
    Blocked(&'a [ConditionProblem]),
}

/// The status the app should have now.
///
/// `deployment` is the newest Deployment the reconciler knows about: the one
/// returned by the apply, or the cached one.
pub fn build(
    app: &SpinApp,
    outcome: &Outcome<'_>,
    deployment: Option<&Deployment>,
    now: &Time,
) -> SpinAppStatus {
    let previous = app.status.as_ref();
    let generation = app.metadata.generation;
    let mut conditions = Conditions {
        previous: previous
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default(),
        generation,
        now,
        out: Vec::new(),
    };

    let deployment_expected = match outcome {
        Outcome::Applied {
            deployment_name, ..
        } => deployment_name.is_some(),
        Outcome::Blocked(_) => deployment.is_some(),
    };

    // Ready.
    match outcome {
        Outcome::Blocked(problems) => {
            let first = problems.first();
            let reason = first.map(|p| p.reason.as_str()).unwrap_or("Blocked");
            let mut message = first.map(|p| p.message.clone()).unwrap_or_default();
            if deployment.is_some() {
                message.push_str(" (the running version is left unchanged until this is fixed)");
            }
            conditions.set(READY, "False", reason, &message);
        }
        Outcome::Applied { .. } if !deployment_expected => conditions.set(
            READY,
            "True",
            "ServiceReady",
            "the executor runs the app without a Deployment (createDeployment: false); the Service is in place",
        ),
        Outcome::Applied { .. } => {
            let (status, reason, message) = rollout_readiness(deployment);
            conditions.set(READY, status, reason, &message);
        }
    }

    // Available and Progressing, copied from the Deployment.
    for type_ in [AVAILABLE, PROGRESSING] {
        match deployment {
            Some(d) => {
                let copied = d
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_.as_deref() == Some(type_)));
                match copied {
                    Some(c) => conditions.set(
                        type_,
                        c.status.as_deref().unwrap_or("Unknown"),
                        c.reason.as_deref().unwrap_or("FromDeployment"),
                        c.message.as_deref().unwrap_or_default(),
                    ),
                    None => conditions.set(
                        type_,
                        "Unknown",
                        "DeploymentNotObserved",
                        "the Deployment controller has not reported this condition yet",
                    ),
                }
            }
            None if deployment_expected || matches!(outcome, Outcome::Blocked(_)) => conditions
                .set(
                    type_,
                    "Unknown",
                    "DeploymentNotFound",
                    "the app's Deployment does not exist yet",
                ),
            None => conditions.set(
                type_,
                "Unknown",
                "DeploymentNotManaged",
                "the executor runs the app without a Deployment (createDeployment: false)",
            ),
        }
    }

    // Reason-specific conditions.
    let problems: &[ConditionProblem] = match outcome {
        Outcome::Blocked(problems) => problems,
        Outcome::Applied { .. } => &[],
    };
    let mut by_type: BTreeMap<&str, Vec<&ConditionProblem>> = BTreeMap::new();
    for p in problems {
        if p.condition_type != READY {
            by_type
                .entry(p.condition_type.as_str())
                .or_default()
                .push(p);
        }
    }
    for (type_, ok_reason, ok_message) in CHECKS {
        match by_type.remove(type_) {
            Some(ps) => set_problems(&mut conditions, type_, &ps),
            None => conditions.set(type_, "True", ok_reason, ok_message),
        }
    }
    for (type_, ps) in by_type {
        set_problems(&mut conditions, type_, &ps);
    }

    let (selector, deployment_name, service_name) = match outcome {
        Outcome::Applied {
            deployment_name,
            selector,
            service_name,
        } => (
            Some(selector.clone()),
            deployment_name.clone(),
            Some(service_name.clone()),
        ),
        Outcome::Blocked(_) => (
            deployment
                .and_then(|d| d.spec.selector.match_labels.as_ref())
                .map(label_selector)
                .or_else(|| previous.and_then(|p| p.selector.clone())),
            deployment
                .map(|d| d.name_any())
                .or_else(|| previous.and_then(|p| p.deployment_name.clone())),
            previous.and_then(|p| p.service_name.clone()),
        ),
    };
    let deployment_status = deployment.and_then(|d| d.status.as_ref());

    SpinAppStatus {
        conditions: conditions.out,
        active_scheduler: Some(app.spec.executor.clone()),
        ready_replicas: deployment_status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
        replicas: deployment.map(|_| deployment_status.and_then(|s| s.replicas).unwrap_or(0)),
        selector,
        observed_generation: generation,
        deployment_name,
        service_name,
        // Image resolution (crate::oci) owns these; kept from the previous status.
        resolved_image: previous.and_then(|p| p.resolved_image.clone()),
        image_format: previous.and_then(|p| p.image_format.clone()),
        // Scale to zero (crate::scale) owns this; kept from the previous status.
        scale_to_zero: previous.and_then(|p| p.scale_to_zero.clone()),
    }
}

fn set_problems(conditions: &mut Conditions<'_>, type_: &str, problems: &[&ConditionProblem]) {
    let reason = problems[0].reason.as_str();
    let message = problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    conditions.set(type_, "False", reason, &message);
}

/// `k1=v1,k2=v2` (sorted by key) for a set of match labels.
pub fn label_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `Ready` derived from a Deployment: true once the rollout of the current
/// generation is complete and every desired pod is available.
fn rollout_readiness(deployment: Option<&Deployment>) -> (&'static str, &'static str, String) {
    let Some(d) = deployment else {
        return (
            "False",
            "DeploymentNotFound",
            "the app's Deployment does not exist yet".to_owned(),
        );
    };
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    let desired = d.spec.replicas.unwrap_or(1);
    if status.observed_generation.unwrap_or(0) < generation {
        return (
            "False",
            "RollingOut",
            "the Deployment controller has not yet seen the newest spec".to_owned(),
        );
    }
    let deadline_exceeded = status.conditions.iter().flatten().any(|c| {
        c.type_.as_deref() == Some(PROGRESSING)
            && c.status.as_deref() == Some("False")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if deadline_exceeded {
        return (
            "False",
            "ProgressDeadlineExceeded",
            "the rollout made no progress within the Deployment's progress deadline; check the app's pods and events"
                .to_owned(),
        );
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        return (
            "False",
            "RollingOut",
            format!("{updated} of {desired} pods run the current version"),
        );
    }
    if total > updated {
        return (
            "False",
            "RollingOut",
            format!("{} old pods are still terminating", total - updated),
        );
    }
    if available < desired {
        return (
            "False",
            "RollingOut",
            format!("{available} of {desired} pods are available"),
        );
    }
    if desired == 0 {
        return (
            "True",
            "ScaledToZero",
            "the app is scaled to zero replicas".to_owned(),
        );
    }
    (
        "True",
        "Ready",
        format!("{available} of {desired} pods are available"),
    )
}

struct Conditions<'a> {
    previous: &'a [Condition],
    generation: Option<i64>,
    now: &'a Time,
    out: Vec<Condition>,
}

impl Conditions<'_> {
    fn set(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| self.now.clone());
        self.out.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time,
            observed_generation: self.generation,
        });
    }
}

/// Fill in image resolution's part of `status` (built by [`build`]):
/// `resolvedImage`, `imageFormat` and the `ImageResolved` condition
/// (replacing one [`build`] set from a problem). `note` is appended to the
/// condition's message (e.g. a missing `imagePullSecret`).
///
/// With resolution disabled the fields are cleared and no condition is set;
/// when no image could be resolved, the previous values (what still runs)
/// are kept.
pub fn set_image(
    status: &mut SpinAppStatus,
    app: &SpinApp,
    decision: &ImageDecision,
    note: Option<&str>,
    now: &Time,
) {
    let previous = app.status.as_ref();
    match decision.image() {
        Some(image) => {
            status.resolved_image = Some(image.image.clone());
            status.image_format = Some(image.format.as_str().to_owned());
        }
        None if matches!(decision, ImageDecision::Disabled) => {
            status.resolved_image = None;
            status.image_format = None;
        }
        None => {
            status.resolved_image = previous.and_then(|p| p.resolved_image.clone());
            status.image_format = previous.and_then(|p| p.image_format.clone());
        }
    }
    status.conditions.retain(|c| c.type_ != IMAGE_RESOLVED);
    if let Some((cond_status, reason, mut message)) = decision.condition() {
        if let Some(note) = note {
            message.push_str("; ");
            message.push_str(note);
        }
        let mut conditions = Conditions {
            previous: previous
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default(),
            generation: app.metadata.generation,
            now,
            out: std::mem::take(&mut status.conditions),
        };
        conditions.set(IMAGE_RESOLVED, cond_status, &reason, &message);
        status.conditions = conditions.out;
    }
}

/// Fill in scale to zero's part of `status` (built by [`build`]):
/// `scaleToZero` (`None` clears it), and `Ready` while an app that was
/// Ready wakes: it stays True (reason `Waking`) because its requests are
/// held by the activator, so `kubectl wait --for=condition=Ready` and
/// readiness-gated tooling do not flap on every wake.
pub fn set_scale_to_zero(
    status: &mut SpinAppStatus,
    app: &SpinApp,
    scale_to_zero: Option<crate::api::ScaleToZeroStatus>,
    now: &Time,
) {
    let waking = scale_to_zero
        .as_ref()
        .is_some_and(|s| s.state.as_deref() == Some("Waking") && s.reason.is_none());
    status.scale_to_zero = scale_to_zero;
    let was_ready = condition(app.status.as_ref(), READY).is_some_and(|c| c.status == "True");
    let rolling_out = condition(Some(status), READY)
        .is_some_and(|c| c.status == "False" && c.reason == "RollingOut");
    if waking && was_ready && rolling_out {
        let previous = app
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let mut conditions = Conditions {
            previous,
            generation: app.metadata.generation,
            now,
            out: std::mem::take(&mut status.conditions),
        };
        conditions.out.retain(|c| c.type_ != READY);
        conditions.set(
            READY,
            "True",
            "Waking",
            "a pod is starting; requests are held by the activator meanwhile",
        );
        // Keep Ready first, where `build` puts it.
        if let Some(ready) = conditions.out.pop() {
            conditions.out.insert(0, ready);
        }
        status.conditions = conditions.out;
    }
}

/// The condition of `type_` in a status, if any.
pub fn condition<'a>(status: Option<&'a SpinAppStatus>, type_: &str) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

/// Problems that are new compared with the previous status: their condition
/// was not already False with the same reason and message. The reconciler
/// emits one Warning event per new problem, so re-reconciling a broken app
/// does not repeat events.
pub fn new_problems<'a>(
    previous: Option<&SpinAppStatus>,
    problems: &'a [ConditionProblem],
) -> Vec<&'a ConditionProblem> {
    problems
        .iter()
        .filter(|p| {
            let Some(c) = condition(previous, &p.condition_type) else {
                return true;
            };
            !(c.status == "False" && c.reason == p.reason && c.message.contains(&p.message))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    use k8s_openapi::jiff::Timestamp;

    use crate::api::SpinAppSpec;

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn app(generation: i64, status: Option<SpinAppStatus>) -> SpinApp {
        SpinApp {
            metadata: ObjectMeta {
                name: Some("hello".into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: SpinAppSpec {
                executor: "containerd-shim-spin".into(),
                image: "x:1".into(),
                ..Default::default()
            },
            status,
        }
    }

    fn applied() -> Outcome<'static> {
        Outcome::Applied {
            deployment_name: Some("hello".into()),
            selector: "core.spinkube.dev/app-name=hello".into(),
            service_name: "hello".into(),
        }
    }

    fn deployment(
        generation: i64,
        observed: i64,
        desired: i32,
        updated: i32,
        available: i32,
    ) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("hello".into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: DeploymentSpec {
                replicas: Some(desired),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "core.spinkube.dev/app-name".into(),
                        "hello".into(),
                    )])),
                    ..Default::default()
                },
                ..Default::default()
            },
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(updated),
                updated_replicas: Some(updated),
                ready_replicas: Some(available),
                available_replicas: Some(available),
                conditions: Some(vec![
                    DeploymentCondition {
                        type_: Some("Available".into()),
                        status: Some(
                            if available >= desired {
                                "True"
                            } else {
                                "False"
                            }
                            .into(),
                        ),
                        reason: Some("MinimumReplicasAvailable".into()),
                        message: Some("Deployment has minimum availability.".into()),
                        ..Default::default()
                    },
                    DeploymentCondition {
                        type_: Some("Progressing".into()),
                        status: Some("True".into()),
                        reason: Some("NewReplicaSetAvailable".into()),
                        message: Some("ReplicaSet has successfully progressed.".into()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    fn get<'a>(status: &'a SpinAppStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"))
    }

    #[test]
    fn missing_deployment_is_unknown_and_not_ready() {
        let status = build(&app(1, None), &applied(), None, &time(100));
        assert_eq!(get(&status, READY).status, "False");
        assert_eq!(get(&status, READY).reason, "DeploymentNotFound");
        for t in [AVAILABLE, PROGRESSING] {
            assert_eq!(get(&status, t).status, "Unknown");
            assert_eq!(get(&status, t).reason, "DeploymentNotFound");
        }
        for t in [
            SPEC_VALID,
            EXECUTOR_READY,
            REFERENCES_RESOLVED,
            RUNTIME_CONFIG_READY,
        ] {
            assert_eq!(get(&status, t).status, "True", "{t}");
        }
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(
            status.active_scheduler.as_deref(),
            Some("containerd-shim-spin")
        );
        assert_eq!(
            status.selector.as_deref(),
            Some("core.spinkube.dev/app-name=hello")
        );
        assert_eq!(status.deployment_name.as_deref(), Some("hello"));
        assert_eq!(status.service_name.as_deref(), Some("hello"));
        assert_eq!(status.ready_replicas, 0);
        assert_eq!(status.replicas, None);
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.last_transition_time == time(100))
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(1))
        );
    }

    #[test]
    fn rolled_out_deployment_is_ready_and_conditions_are_copied() {
        let d = deployment(2, 2, 3, 3, 3);
        let status = build(&app(1, None), &applied(), Some(&d), &time(100));
        assert_eq!(get(&status, READY).status, "True");
        assert_eq!(get(&status, READY).reason, "Ready");
        assert_eq!(get(&status, AVAILABLE).status, "True");
        assert_eq!(get(&status, AVAILABLE).reason, "MinimumReplicasAvailable");
        assert_eq!(get(&status, PROGRESSING).reason, "NewReplicaSetAvailable");
        assert_eq!(status.ready_replicas, 3);
        assert_eq!(status.replicas, Some(3));
    }

    #[test]
    fn rollout_in_progress_is_not_ready() {
        // Controller has not observed the new generation.
        let status = build(
            &app(1, None),
            &applied(),
            Some(&deployment(3, 2, 1, 1, 1)),
            &time(1),
        );
        assert_eq!(get(&status, READY).reason, "RollingOut");
        // Pods not yet available.
        let status = build(
            &app(1, None),
            &applied(),
            Some(&deployment(1, 1, 2, 2, 1)),
            &time(1),
        );
        assert_eq!(get(&status, READY).status, "False");
        assert_eq!(get(&status, READY).message, "1 of 2 pods are available");
        // Not all pods updated.
        let status = build(
            &app(1, None),
            &applied(),
            Some(&deployment(1, 1, 2, 1, 1)),
            &time(1),
        );
        assert_eq!(
            get(&status, READY).message,
            "1 of 2 pods run the current version"
        );
    }

    #[test]
    fn progress_deadline_exceeded_is_reported() {
        let mut d = deployment(1, 1, 1, 1, 0);
        let conditions = d.status.as_mut().unwrap().conditions.as_mut().unwrap();
        conditions[1].status = Some("False".into());
        conditions[1].reason = Some("ProgressDeadlineExceeded".into());
        let status = build(&app(1, None), &applied(), Some(&d), &time(1));
        assert_eq!(get(&status, READY).reason, "ProgressDeadlineExceeded");
        assert_eq!(get(&status, PROGRESSING).status, "False");
    }

    #[test]
    fn scaled_to_zero_is_ready() {
        let status = build(
            &app(1, None),
            &applied(),
            Some(&deployment(1, 1, 0, 0, 0)),
            &time(1),
        );
        assert_eq!(get(&status, READY).status, "True");
        assert_eq!(get(&status, READY).reason, "ScaledToZero");
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let d = deployment(1, 1, 1, 1, 1);
        let first = build(&app(1, None), &applied(), Some(&d), &time(100));
        let second = build(
            &app(1, Some(first.clone())),
            &applied(),
            Some(&d),
            &time(200),
        );
        assert_eq!(
            first, second,
            "an unchanged app must produce an identical status"
        );

        // Ready flips: only Ready (and Available) get the new time.
        let rolling = deployment(2, 2, 1, 1, 0);
        let third = build(
            &app(1, Some(second)),
            &applied(),
            Some(&rolling),
            &time(300),
        );
        assert_eq!(get(&third, READY).last_transition_time, time(300));
        assert_eq!(get(&third, AVAILABLE).last_transition_time, time(300));
        assert_eq!(get(&third, PROGRESSING).last_transition_time, time(100));
        assert_eq!(get(&third, SPEC_VALID).last_transition_time, time(100));
    }

    #[test]
    fn problems_set_their_conditions_and_keep_the_running_deployment() {
        let running = deployment(1, 1, 1, 1, 1);
        let ok = build(&app(1, None), &applied(), Some(&running), &time(100));
        let problems = vec![
            ConditionProblem {
                condition_type: EXECUTOR_READY.into(),
                reason: "ExecutorNotFound".into(),
                message: "SpinAppExecutor \"x\" not found in namespace \"a\"; create it".into(),
            },
            ConditionProblem {
                condition_type: REFERENCES_RESOLVED.into(),
                reason: "SecretNotFound".into(),
                message: "Secret \"s\" not found".into(),
            },
            ConditionProblem {
                condition_type: REFERENCES_RESOLVED.into(),
                reason: "SecretNotFound".into(),
                message: "Secret \"t\" not found".into(),
            },
        ];
        let status = build(
            &app(2, Some(ok)),
            &Outcome::Blocked(&problems),
            Some(&running),
            &time(200),
        );
        let ready = get(&status, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ExecutorNotFound")
        );
        assert!(
            ready.message.contains("left unchanged"),
            "{}",
            ready.message
        );
        assert_eq!(get(&status, EXECUTOR_READY).status, "False");
        assert_eq!(
            get(&status, REFERENCES_RESOLVED).message,
            "Secret \"s\" not found; Secret \"t\" not found"
        );
        assert_eq!(get(&status, SPEC_VALID).status, "True");
        assert_eq!(get(&status, SPEC_VALID).last_transition_time, time(100));
        // The Deployment still runs: Available stays as the Deployment says.
        assert_eq!(get(&status, AVAILABLE).status, "True");
        assert_eq!(status.ready_replicas, 1);
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(
            status.selector.as_deref(),
            Some("core.spinkube.dev/app-name=hello")
        );
        assert_eq!(status.service_name.as_deref(), Some("hello"));
    }

    #[test]
    fn a_ready_app_that_wakes_stays_ready() {
        use crate::api::ScaleToZeroStatus;
        let waking = |reason: Option<&str>| ScaleToZeroStatus {
            state: Some("Waking".into()),
            reason: reason.map(Into::into),
            ..Default::default()
        };
        // Idle (0 replicas) is Ready already; the wake starts a pod.
        let idle = build(
            &app(1, None),
            &applied(),
            Some(&deployment(1, 1, 0, 0, 0)),
            &time(100),
        );
        let starting = deployment(2, 2, 1, 1, 0);
        let mut status = build(
            &app(1, Some(idle.clone())),
            &applied(),
            Some(&starting),
            &time(200),
        );
        assert_eq!(get(&status, READY).status, "False");
        set_scale_to_zero(
            &mut status,
            &app(1, Some(idle.clone())),
            Some(waking(None)),
            &time(200),
        );
        let ready = get(&status, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Waking")
        );
        assert_eq!(ready.last_transition_time, time(100), "no transition");
        assert_eq!(status.conditions[0].type_, READY, "Ready stays first");
        assert_eq!(status.scale_to_zero, Some(waking(None)));

        // A brand-new app (never Ready) or one without an activator
        // (a refusal) is not Ready until a pod is.
        let mut fresh = build(&app(1, None), &applied(), Some(&starting), &time(200));
        set_scale_to_zero(&mut fresh, &app(1, None), Some(waking(None)), &time(200));
        assert_eq!(get(&fresh, READY).status, "False");
        let mut alone = build(
            &app(1, Some(idle.clone())),
            &applied(),
            Some(&starting),
            &time(200),
        );
        set_scale_to_zero(
            &mut alone,
            &app(1, Some(idle)),
            Some(waking(Some("ActivatorUnavailable"))),
            &time(200),
        );
        assert_eq!(get(&alone, READY).status, "False");
        // Off: the field is cleared.
        set_scale_to_zero(&mut alone, &app(1, None), None, &time(200));
        assert_eq!(alone.scale_to_zero, None);
    }

    #[test]
    fn only_new_problems_are_reported() {
        let problems = vec![ConditionProblem {
            condition_type: EXECUTOR_READY.into(),
            reason: "ExecutorNotFound".into(),
            message: "missing".into(),
        }];
        assert_eq!(new_problems(None, &problems).len(), 1);
        let status = build(&app(1, None), &Outcome::Blocked(&problems), None, &time(1));
        assert!(new_problems(Some(&status), &problems).is_empty());
        let changed = vec![ConditionProblem {
            message: "other".into(),
            ..problems[0].clone()
        }];
        assert_eq!(new_problems(Some(&status), &changed).len(), 1);
    }

    #[test]
    fn service_only_executor_is_ready_without_deployment() {
        let outcome = Outcome::Applied {
            deployment_name: None,
            selector: "core.spinkube.dev/app-name=hello".into(),
            service_name: "hello".into(),
        };
        let status = build(&app(1, None), &outcome, None, &time(1));
        assert_eq!(get(&status, READY).status, "True");
        assert_eq!(get(&status, AVAILABLE).reason, "DeploymentNotManaged");
        assert_eq!(status.deployment_name, None);
    }

    #[test]
    fn image_resolution_fields_and_condition() {
        use crate::oci::ImageFormat;
        use crate::oci::app::AppImage;

        let pinned = "x:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let resolved = ImageDecision::Resolved {
            image: AppImage {
                image: pinned.into(),
                format: ImageFormat::WasmComponent,
            },
            changed: true,
        };
        let a = app(1, None);
        let mut status = build(&a, &applied(), None, &time(10));
        set_image(&mut status, &a, &resolved, None, &time(10));
        assert_eq!(status.resolved_image.as_deref(), Some(pinned));
        assert_eq!(status.image_format.as_deref(), Some("WasmComponent"));
        let c = get(&status, IMAGE_RESOLVED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "WasmComponent")
        );

        // A later failure (with a note) keeps what runs and flips the
        // condition once, replacing one `build` set from a problem.
        let a = app(2, Some(status));
        let failed = ImageDecision::Failed(crate::oci::Error::RegistryUnavailable {
            registry: "r".into(),
            detail: "down".into(),
        });
        let problems = [ConditionProblem {
            condition_type: IMAGE_RESOLVED.into(),
            reason: "RegistryUnavailable".into(),
            message: "m".into(),
        }];
        let mut status = build(&a, &Outcome::Blocked(&problems), None, &time(20));
        set_image(
            &mut status,
            &a,
            &failed,
            Some("secret s not found"),
            &time(20),
        );
        assert_eq!(
            status
                .conditions
                .iter()
                .filter(|c| c.type_ == IMAGE_RESOLVED)
                .count(),
            1
        );
        let c = get(&status, IMAGE_RESOLVED);
        assert_eq!(c.status, "False");
        assert_eq!(c.reason, "RegistryUnavailable");
        assert!(c.message.ends_with("; secret s not found"), "{}", c.message);
        assert_eq!(c.last_transition_time, time(20));
        assert_eq!(status.resolved_image.as_deref(), Some(pinned));

        // Disabled: no condition, no fields.
        let a = app(3, Some(status));
        let mut status = build(&a, &applied(), None, &time(30));
        set_image(&mut status, &a, &ImageDecision::Disabled, None, &time(30));
        assert!(status.resolved_image.is_none() && status.image_format.is_none());
        assert!(condition(Some(&status), IMAGE_RESOLVED).is_none());
    }
}
